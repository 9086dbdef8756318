"""Local deployments: check a deployment request, then start its serving process.

The request is refused before anything starts when the job has no such checkpoint, the
checkpoint is not a Hugging Face folder and no model class was given, or the asked-for
port is busy. The serving process (model_server.py) runs detached, like job runners.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from bt_jupyter.local import checkpoints
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import DeploymentRow, JobRow, Store


class DeployRefused(Exception):
    """Why a deployment cannot start (HTTP 400/409 with this message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve_checkpoint(home: Home, job: JobRow, checkpoint: str) -> str:
    found = checkpoints.scan(job.id, home.job_dir(job.id) / "checkpoints")
    if not found:
        raise DeployRefused(400, f"job {job.id} has no checkpoints to deploy")
    if checkpoint == "latest":
        return found[-1].name
    if checkpoint not in {c.name for c in found}:
        names = ", ".join(c.name for c in found)
        raise DeployRefused(400, f"job {job.id} has no checkpoint {checkpoint!r}; it has {names}")
    return checkpoint


def _is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _port(wanted: int | None) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", wanted or 0))
        except OSError:
            raise DeployRefused(
                409, f"port {wanted} is in use; pick another or leave it out"
            ) from None
        return int(sock.getsockname()[1])


def start(
    home: Home,
    store: Store,
    job: JobRow,
    checkpoint: str,
    name: str | None,
    model_bundle: Path | None,
    port: int | None,
) -> DeploymentRow:
    chosen = resolve_checkpoint(home, job, checkpoint)
    folder = checkpoints.folder_of(home.job_dir(job.id) / "checkpoints" / "rank-0", chosen)
    if model_bundle is None and not _is_hf_folder(folder):
        raise DeployRefused(
            400,
            f"checkpoint {chosen} is not a Hugging Face model folder (config.json + "
            "safetensors, or a LoRA adapter): define how to load it in a %%bt_model cell",
        )
    row = store.create_deployment(
        name or f"{job.name or job.id}-{chosen}",
        job.id,
        chosen,
        "model" if model_bundle else "hf",
        _port(port),
    )
    target = home.deployment_dir(row.id)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    if model_bundle is not None:
        os.link(model_bundle, target / "model.tar")
    log = os.open(target / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bt_jupyter.local.model_server", "--home", str(home.root),
         "--deployment", row.id],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=target,
        umask=0o077,  # the bundle it unpacks and its log: this user's only
    )  # fmt: skip
    os.close(log)
    threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it ends
    store.update_deployment(row.id, pid=proc.pid)
    found = store.deployment(row.id)
    assert found is not None
    return found


def stop(store: Store, deployment: DeploymentRow) -> None:
    if deployment.pid and deployment.status in ("DEPLOYING", "ACTIVE"):
        try:
            os.kill(deployment.pid, signal.SIGTERM)
        except ProcessLookupError:
            store.update_deployment(deployment.id, status="STOPPED")


def settle(store: Store, deployment: DeploymentRow) -> DeploymentRow:
    """A live deployment whose process is gone is FAILED (it did not say why)."""
    if deployment.status in ("DEPLOYING", "ACTIVE") and deployment.pid:
        try:
            os.kill(deployment.pid, 0)
        except ProcessLookupError:
            store.update_deployment(
                deployment.id, status="FAILED", error_message="the serving process exited"
            )
            found = store.deployment(deployment.id)
            assert found is not None
            return found
    return deployment
