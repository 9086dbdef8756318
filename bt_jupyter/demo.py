"""``make demo``: the main job, end to end, on the embedded local service.

Submits a small PyTorch training job (a tiny model fit on generated data, checkpoints
on) through the same client that talks to Baseten, follows its logs live, then prints
its lifecycle, final status and checkpoints. What is not built yet is said at the end.
"""

from __future__ import annotations

import io
import sys
import tarfile
import textwrap
import time

from bt_jupyter import spec
from bt_jupyter.client import ApiClient

TRAIN_PY = textwrap.dedent(
    """
    import os, pathlib, time
    import torch

    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 256).unsqueeze(1)
    y = torch.sin(2 * x) + 0.1 * torch.randn_like(x)
    model = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    ckpt_root = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"])
    for step in range(1, 201):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 25 == 0:
            print(f"step {step:3d}  loss {loss.item():.4f}", flush=True)
        if step % 100 == 0:
            out = ckpt_root / f"checkpoint-{step}"
            out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), out / "model.pt")
            print(f"saved {out.name}", flush=True)
    """
)


def quickstart_project() -> spec.TrainingProject:
    """The job the quickstart notebook submits: one CPU node, checkpoints on."""
    return spec.TrainingProject(
        name="quickstart",
        job=spec.TrainingJob(
            name="tiny-sine",
            image=spec.Image(base_image="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"),
            compute=spec.Compute(cpu_count=2, memory="4Gi"),
            runtime=spec.Runtime(
                start_commands=["python train.py"],
                checkpointing_config=spec.CheckpointingConfig(enabled=True),
            ),
        ),
    )


def _bundle() -> bytes:
    data = TRAIN_PY.encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main() -> int:
    print("Starting the embedded local service (Baseten's training API on this machine) ...")
    started = time.monotonic()
    with ApiClient.local() as client:
        print(f"  ready at {client.base_url} in {time.monotonic() - started:.1f}s")
        project = quickstart_project()
        remote = client.upsert_project(project)
        artifact, sent = client.upload_artifact(_bundle())
        print(f"Uploaded the job's files ({sent} bytes; 0 means already there)")
        job = client.create_job(remote.id, project.job, [artifact])
        print(
            f"Submitted job {job.id} ({project.job.compute.describe()}) in project {remote.name!r}"
        )
        print("--- logs ---")
        for followed in client.stream_logs(remote.id, job.id):
            node = f"[node {followed.log.replica}]" if followed.log.replica else "[runner]"
            print(f"{node:9} {followed.log.message}")
        print("--- lifecycle ---")
        for status, at in client.history(remote.id, job.id):
            print(f"  {at}  {status.short}")
        final = client.job(remote.id, job.id).training_job
        print(
            f"Final status: {final.status.short}"
            + (f" ({final.error_message})" if final.error_message else "")
        )
        print("Checkpoints:")
        for ckpt in client.checkpoints(remote.id, job.id):
            print(f"  {ckpt.checkpoint_id}  {ckpt.size_bytes} bytes  {ckpt.checkpoint_type}")
    print(
        "\nNot built yet: %%bt_train (packaging a notebook cell), the live widget, and "
        "deploying a checkpoint. This demo ran the job through the client and the local service."
    )
    return 0 if final.status == spec.TrainingJobStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
