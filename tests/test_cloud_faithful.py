"""Statuses, checkpoints and logs as Baseten returns them (issue 12, section 3).

Against the local service in baseten stand-in mode, which behaves as Baseten does where a
client can get it wrong: jobs are QUEUED first, checkpoint files sync with a delay (and
``checkpoint_sync_status`` says so), files at the checkpoint root are checkpoint ``.``, log
windows are limited as Baseten limits them, some lines reach the log API late, and
presigned URLs refuse an Authorization header.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from bt_jupyter import Client, Job, api, runtime, spec
from bt_jupyter.backends.baseten import deploy as cloud_deploy
from bt_jupyter.client import ApiError, GraphQLError, OutputsMissing, node_of
from bt_jupyter.jobs import JobFailed
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.widgets.job import JobWidget
from tests.helpers import running_service, wait_for
from tests.test_cloud import BUCKET, TEAMS, _bundle, cloud, s3_endpoint  # noqa: F401
from tests.test_local_contract import Recorder

S = spec.TrainingJobStatus
Cloud = tuple[Client, Recorder]
SYNC_S = 3.0  # long enough that a test sees checkpoints still syncing after a job ends
QUEUE_S = 2.0  # long enough that a test sees a job still queued after submitting it


@pytest.fixture(scope="module")
def cloud_home(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:  # noqa: F811
    """The stand-in of tests.test_cloud, with a sync delay a test can observe."""
    home = Home(tmp_path_factory.mktemp("baseten_faithful"))
    with running_service(
        home,
        BT_JUPYTER_SERVICE_S3_ENDPOINT=s3_endpoint,
        BT_JUPYTER_SERVICE_S3_BUCKET=BUCKET,
        BT_JUPYTER_SERVICE_TEAMS=TEAMS,
        BT_JUPYTER_SERVICE_CHECKPOINT_SYNC_S=str(SYNC_S),
        BT_JUPYTER_SERVICE_QUEUE_S=str(QUEUE_S),
    ):
        yield home


def _project(bundle: Any, name: str, **runtime_fields: Any) -> spec.TrainingProject:
    return spec.TrainingProject(
        name=name,
        job=spec.TrainingJob(
            image=spec.Image(base_image=bundle.base_image),
            compute=spec.Compute(accelerator="H100:1"),
            runtime=spec.Runtime(
                start_commands=bundle.start_commands,
                checkpointing_config=spec.CheckpointingConfig(enabled=True),
                **runtime_fields,
            ),
        ),
    )


# --------------------------------------------------------------------------- statuses


def test_a_queued_job_is_handled_and_its_message_is_advice(cloud: Cloud) -> None:  # noqa: F811
    client, _ = cloud
    bundle = _bundle("answer = 1")
    name = f"queued-{new_id()}"
    job = client.submit(_project(bundle, name), bundle)
    assert job.status == S.QUEUED  # Baseten answers a create with the job still queued
    assert job.error_message is None
    assert job.notice
    assert "capacity" in job.notice
    assert "note: Waiting for capacity" in job.summary()
    assert "error:" not in job.summary()
    assert "error=" not in repr(job)
    assert [j.status for j in client.jobs(project=name)] == [S.QUEUED]  # no parse error
    widget = JobWidget(job)  # the widget shows the advice as a notice, not as an error
    try:
        wait_for(lambda: widget.status, 10, "the widget's first state")
        assert widget.status == S.QUEUED.value
        assert "capacity" in widget.notice
        assert widget.error == ""
    finally:
        assert job.wait(timeout=120).status == S.COMPLETED
        assert widget.watcher is not None
        widget.watcher.close()
        widget.watcher.join(timeout=30)  # its threads end with the job's last lines
        widget.close()
    assert job.error_message is None
    assert job.notice is None
    statuses = [s for s, _ in client.api.history(job.project_id, job.id)]
    assert statuses == [S.QUEUED, S.CREATED, S.DEPLOYING, S.RUNNING, S.COMPLETED]


def test_a_status_baseten_adds_later_is_shown_as_is_and_not_terminal() -> None:
    now = datetime.now(timezone.utc)
    wire = api.TrainingJobV1(
        id="j1",
        created_at=now,
        current_status="TRAINING_JOB_PREEMPTED",
        instance_type=api.InstanceTypeV1(
            id="H100:1",
            name="H100:1",
            memory_limit_mib=1,
            millicpu_limit=1,
            gpu_count=1,
            gpu_type="H100",
            gpu_memory_limit_mib=None,
        ),
        updated_at=now,
        training_project_id="p1",
        training_project=api.TrainingProjectSummaryV1(id="p1", name="p"),
    )
    status = wire.status
    assert (status.short, status.value) == ("PREEMPTED", "TRAINING_JOB_PREEMPTED")
    assert not status.is_terminal
    assert not status.is_failure
    assert not status.is_known
    assert status == S.from_wire("TRAINING_JOB_PREEMPTED")
    assert "[PREEMPTED]" in repr(Job(Client.__new__(Client), wire))
    for known in ("PENDING", "QUEUED", "CREATED", "DEPLOYING", "RUNNING", "COMPLETED"):
        assert S.from_wire(f"TRAINING_JOB_{known}").is_known


# --------------------------------------------------------------------------- checkpoints

ROOT_AND_OUT = """
from bt_jupyter.runtime import checkpoint_dir
import time
step = checkpoint_dir() / "checkpoint-1"
step.mkdir()
(step / "weights.bin").write_bytes(b"1" * 10)
time.sleep(0.05)
(checkpoint_dir() / "config.json").write_text("{}")
(checkpoint_dir() / "model.safetensors").write_bytes(b"2" * 20)
answer = 42
"""


@pytest.fixture(scope="module")
def root_job_id(cloud_home: Any, s3_endpoint: str, tmp_path_factory: Any) -> str:  # noqa: F811
    """A finished job with checkpoint-1, files at the checkpoint root and ``--out`` answer."""
    from tests.test_cloud import _cloud_env

    with pytest.MonkeyPatch.context() as mp:
        info = _cloud_env(cloud_home, s3_endpoint, tmp_path_factory.mktemp("records"), mp)
        with Client.baseten(api_key=info.api_key, base_url=info.url) as client:
            bundle = _bundle(ROOT_AND_OUT)
            job = client.submit(_project(bundle, f"root-{new_id()}"), bundle)
            assert job.wait(timeout=120).status == S.COMPLETED
            return job.id


def test_outputs_wait_for_the_checkpoint_sync(cloud: Cloud, root_job_id: str) -> None:  # noqa: F811
    client, _ = cloud
    job = client.job(root_job_id)
    synced = client.api.wait_checkpoints_synced(job.project_id, job.id, timeout=60)
    assert synced.checkpoint_sync_status == api.CHECKPOINT_SYNCED
    assert job.outputs() == {"answer": 42}


def test_fresh_outputs_are_read_after_the_sync_not_missed(cloud: Cloud) -> None:  # noqa: F811
    client, _ = cloud
    bundle = _bundle("answer = 7")
    job = client.submit(_project(bundle, f"sync-{new_id()}"), bundle).wait(timeout=120)
    assert job.refresh()._wire.checkpoint_sync_status == api.CHECKPOINT_SYNCING
    assert job.outputs() == {"answer": 7}


def test_the_root_checkpoint_is_listed_and_outputs_never_are(
    cloud: Cloud,  # noqa: F811
    root_job_id: str,
) -> None:
    client, _ = cloud
    job = client.job(root_job_id)
    client.api.wait_checkpoints_synced(job.project_id, job.id, timeout=60)
    assert [c.checkpoint_id for c in job.checkpoints()] == ["checkpoint-1", "."]
    raw = client.api.checkpoints(job.project_id, job.id, include_outputs=True)
    assert runtime.OUTPUTS_DIR in [c.checkpoint_id for c in raw]  # what Baseten lists
    assert max(raw, key=lambda c: c.created_at).checkpoint_id == runtime.OUTPUTS_DIR
    root = next(c for c in job.checkpoints() if c.checkpoint_id == ".")
    assert root.size_bytes == 22
    assert root.sync_status == api.CHECKPOINT_SYNCED
    plan = cloud_deploy.plan(client.api, job._wire)  # the default: "latest"
    assert plan.checkpoint.checkpoint_id == "."


def test_presigned_urls_are_fetched_without_authorization(
    cloud: Cloud,  # noqa: F811
    root_job_id: str,
) -> None:
    client, _ = cloud
    job = client.job(root_job_id)
    [url] = [
        f.url
        for f in client.api.checkpoint_files(job.project_id, job.id)
        if f.relative_file_name == "rank-0/config.json"
    ]
    assert httpx.get(url, headers={"Authorization": ""}).status_code == 403
    assert client.api.fetch_presigned(url) == b"{}"


def test_load_latest_names_a_model_checkpoint_not_the_outputs(
    cloud: Cloud,  # noqa: F811
    root_job_id: str,
) -> None:
    client, recorder = cloud
    bundle = _bundle(
        "import os\nprint('loaded', sorted(os.listdir(os.environ['BT_LOAD_CHECKPOINT_DIR']"
        " + '/rank-0')))\nanswer = 0"
    )
    load = spec.LoadCheckpointConfig(
        enabled=True, checkpoints=[spec.LatestCheckpoint(job_id=root_job_id)]
    )
    job = client.submit(
        _project(bundle, f"load-{new_id()}", load_checkpoint_config=load), bundle
    ).wait(timeout=120)
    sent = [e for e in recorder.exchanges if e.method == "POST" and e.path.endswith("/jobs")]
    assert b'"baseten_named_checkpoint"' in sent[-1].request_body
    loaded = f"Loaded checkpoint . of job {root_job_id} (1 rank(s))"
    printed = "loaded ['config.json', 'model.safetensors']"

    def both_lines() -> list[str] | None:  # either may reach the log API late
        found = [line.message for line in job.logs()]
        return found if loaded in found and printed in found else None

    wait_for(both_lines, 10, f"{loaded!r} and {printed!r} in the job's log", every=0.2)


def test_missing_outputs_are_a_clear_error_not_empty(cloud: Cloud) -> None:  # noqa: F811
    client, _ = cloud
    bundle = _bundle("raise SystemExit(3)\nanswer = 42")  # ends before saving --out answer
    job = client.submit(_project(bundle, f"noout-{new_id()}"), bundle)
    with pytest.raises(JobFailed, match="FAILED"):
        job.wait(timeout=120)
    with pytest.raises(OutputsMissing, match=r"has no outputs \(answer\): it ended FAILED"):
        job.outputs(sync_timeout=60)
    again = client.job(job.id)  # re-attached: the --out names come from its bundle
    with pytest.raises(OutputsMissing, match=r"\(answer\)"):
        again.outputs(sync_timeout=60)


def test_an_unsynced_checkpoint_is_refused_and_the_client_waits(
    cloud: Cloud,  # noqa: F811
    root_job_id: str,
) -> None:
    client, _ = cloud
    bundle = _bundle(ROOT_AND_OUT)
    job = client.submit(_project(bundle, f"unsynced-{new_id()}"), bundle).wait(timeout=120)
    assert job.refresh()._wire.checkpoint_sync_status == api.CHECKPOINT_SYNCING
    listed = client.api.checkpoints(job.project_id, job.id, include_outputs=True)
    assert runtime.OUTPUTS_DIR not in [c.checkpoint_id for c in listed]  # written last
    # what truss would send to deploy this job's "." (the request of a synced twin)
    request = copy.deepcopy(cloud_deploy.plan(client.api, client.job(root_job_id)._wire).request)
    source = request["weights_sources"][0]["b10_training_checkpoint_weights_source"]
    source["checkpoint"]["training_job_id"] = job.id
    with pytest.raises(GraphQLError, match="still syncing"):
        cloud_deploy.create(client.api, request | {"dry_run": True})
    client.api.wait_checkpoints_synced(job.project_id, job.id, timeout=60)
    assert cloud_deploy.create(client.api, request | {"dry_run": True}).model_version is None


# --------------------------------------------------------------------------- logs


def test_log_windows_follow_baseten_s_limits(cloud: Cloud) -> None:  # noqa: F811
    client, _ = cloud
    bundle = _bundle("print('hello from the job')\nanswer = 1")
    job = client.submit(_project(bundle, f"window-{new_id()}"), bundle).wait(timeout=120)
    now = int(time.time() * 1000)
    week = 7 * 24 * 3600 * 1000
    with pytest.raises(ApiError, match="must not exceed 7 days") as refused:
        client.api.logs(job.project_id, job.id, start_epoch_millis=now - week - 10,
                        end_epoch_millis=now)  # fmt: skip
    assert refused.value.status == 400
    later = now + 31 * 60 * 1000  # no start: only the 30 minutes before the end
    assert client.api.logs(job.project_id, job.id, end_epoch_millis=later) == []
    # one line in three reaches Baseten's log API late (the stand-in does the same)
    wait_for(
        lambda: "hello from the job" in [line.message for line in job.logs()],
        10,
        "the job's own line in its log",
        every=0.2,
    )


def test_polling_catches_late_lines_and_the_last_ones(cloud: Cloud) -> None:  # noqa: F811
    client, _ = cloud
    cell = "import time\nfor i in range(120):\n    print('n', i, flush=True); time.sleep(0.05)\n"
    bundle = _bundle(cell + "print('the very end')\nanswer = 1")
    job = client.submit(_project(bundle, f"late-{new_id()}"), bundle)
    followed = [f.log for f in job.follow()]
    messages = [line.message for line in followed]
    assert sorted(m for m in messages if m.startswith("n ")) == sorted(f"n {i}" for i in range(120))
    assert "the very end" in messages
    assert "Job COMPLETED" in messages
    assert len({(x.timestamp, x.message, x.replica) for x in followed}) == len(followed)
    by_time = [line.message for line in sorted(followed, key=lambda x: int(x.timestamp))]
    assert by_time != messages, "no line came late: the stand-in checked nothing"


def test_node_filter_reads_baseten_s_replica_names() -> None:
    assert node_of("0") == 0
    assert node_of("3") == 3
    assert node_of("bt-training-job-abc123-0") == 0
    assert node_of("bt-training-job-abc123-0-1") == 1
    assert node_of(None) is None
    assert node_of("runner") is None


# --------------------------------------------------------------------------- torchrun


def test_torchrun_waits_for_late_nodes_and_runs_one_process_per_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    launched: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _exe, argv: launched.append(argv))
    monkeypatch.setenv("BT_GROUP_SIZE", "2")
    monkeypatch.setenv("BT_NODE_RANK", "1")
    monkeypatch.setenv("BT_LEADER_ADDR", "10.0.0.5")
    monkeypatch.setenv("BT_NUM_GPUS", "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    runtime._torchrun(None)
    argv = launched[-1]
    assert "--nproc_per_node=4" in argv  # the GPUs this node has
    assert "--rdzv_conf=timeout=1200" in argv
    assert "--node_rank=1" in argv
    assert os.environ["NCCL_SOCKET_IFNAME"] == "^docker0,lo"
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth9")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    runtime._torchrun(2)
    assert "--nproc_per_node=2" in launched[-1]
    assert os.environ["NCCL_SOCKET_IFNAME"] == "eth9"  # the job's own setting stays
