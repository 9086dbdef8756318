"""Real jobs on the real local service: lifecycle, nodes, failure, stop, logs."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from tests.helpers import (
    INSTALL,
    messages,
    requirements,
    submit,
    wait_for,
    wait_status,
    wait_terminal,
)

S = spec.TrainingJobStatus


def test_single_node_job_completes_with_baseten_env(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        [
            "echo job=$BT_TRAINING_JOB_ID name=$BT_TRAINING_JOB_NAME",
            "echo project=$BT_TRAINING_PROJECT_ID/$BT_TRAINING_PROJECT_NAME",
            "echo rank=$BT_NODE_RANK of $BT_GROUP_SIZE leader=$BT_LEADER_ADDR gpus=$BT_NUM_GPUS",
            "echo retry=$BT_RETRY_COUNT ckpt=$BT_CHECKPOINT_DIR",
        ],
        name="env-check",
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    assert job.status == S.CREATED
    done = wait_terminal(client, job)
    assert done.status == S.COMPLETED, done.error_message
    out = messages(client, job, node="0")
    assert f"job={job.id} name=env-check" in out
    assert f"project={project.id}/{project.name}" in out
    assert "rank=0 of 1 leader=127.0.0.1 gpus=0" in out
    assert any(m.startswith("retry=0 ckpt=") and m.endswith("/checkpoints/rank-0") for m in out)
    history = [s for s, _ in client.history(project.id, job.id)]
    assert history == [S.CREATED, S.DEPLOYING, S.RUNNING, S.COMPLETED]


def test_two_nodes_all_reduce_over_gloo(client: ApiClient, project: api.TrainingProjectV1) -> None:
    """Each node joins torch.distributed from the BT_* variables and all-reduces a tensor."""
    script = """
        import os, torch, torch.distributed as dist
        rank, world = int(os.environ["BT_NODE_RANK"]), int(os.environ["BT_GROUP_SIZE"])
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://{os.environ['BT_LEADER_ADDR']}:{os.environ['PORT']}",
            rank=rank,
            world_size=world,
        )
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        print(f"node {rank}/{world} all_reduce={t.item()}")
        dist.destroy_process_group()
    """
    port = _free_port()
    job = submit(
        client,
        project,
        [INSTALL, "python allreduce.py"],
        files={"allreduce.py": script, **requirements("torch")},
        compute=spec.Compute(node_count=2),
        runtime=spec.Runtime(environment_variables={"PORT": str(port)}),
    )
    done = wait_terminal(client, job, timeout=180)
    assert done.status == S.COMPLETED, done.error_message
    assert "node 0/2 all_reduce=3.0" in messages(client, job, node="0")
    assert "node 1/2 all_reduce=3.0" in messages(client, job, node="1")


def test_failing_node_fails_the_job_and_stops_the_others(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    job = submit(
        client,
        project,
        [
            'if [ "$BT_NODE_RANK" = 1 ]; then python -c "raise ValueError(\'boom on 1\')"; fi',
            "sleep 120",
        ],
        compute=spec.Compute(node_count=2),
    )
    done = wait_terminal(client, job, timeout=30)
    assert done.status == S.FAILED
    assert done.error_message == "node 1 exited with code 1: ValueError: boom on 1"
    _assert_no_processes_left(local_home, job.id)


def test_job_killed_from_outside_names_the_signal(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    job = submit(client, project, ["echo pid=$$", "exec sleep 120"])
    line = wait_for(
        lambda: next((m for m in messages(client, job) if m.startswith("pid=")), None),
        30,
        "the job to print its pid",
    )
    wait_status(client, job, S.RUNNING)
    os.kill(int(line.removeprefix("pid=")), signal.SIGKILL)
    done = wait_terminal(client, job, timeout=20)
    assert done.status == S.FAILED
    assert done.error_message is not None
    assert "node 0 was killed by signal SIGKILL (9)" in done.error_message
    _assert_no_processes_left(local_home, job.id)


def test_stop_lets_the_job_write_a_final_checkpoint(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    script = """
        import os, pathlib, signal, sys, time
        ckpt = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"])
        step = 0
        def final(signum, frame):
            print("got SIGTERM", flush=True)
            out = ckpt / "final"
            out.mkdir()
            (out / "state.txt").write_text(f"step={step}")
            print(f"saved final checkpoint at step {step}", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, final)
        print("training", flush=True)
        while True:
            step += 1
            time.sleep(0.01)
    """
    job = submit(
        client,
        project,
        ["python train.py"],
        files={"train.py": script},
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    wait_for(lambda: "training" in messages(client, job), 30, "the training loop to start")
    client.stop_job(project.id, job.id)
    done = wait_terminal(client, job, timeout=30)
    assert done.status == S.STOPPED
    out = messages(client, job)
    assert any(m.startswith("saved final checkpoint") for m in out)
    assert out.count("got SIGTERM") == 1  # as a container stop: one, never re-entering
    names = [c.checkpoint_id for c in client.checkpoints(project.id, job.id)]
    assert names == ["final"]
    files = client.checkpoint_files(project.id, job.id)
    assert [f.relative_file_name for f in files] == ["rank-0/final/state.txt"]
    _assert_no_processes_left(local_home, job.id)


def test_stop_before_start_and_stop_is_idempotent(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(client, project, ["sleep 60"])
    client.stop_job(project.id, job.id)
    client.stop_job(project.id, job.id)
    assert wait_terminal(client, job, timeout=30).status == S.STOPPED


def test_checkpoints_are_listed_while_the_job_runs(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        [
            'mkdir -p "$BT_CHECKPOINT_DIR/checkpoint-10"',
            'head -c 2048 /dev/zero > "$BT_CHECKPOINT_DIR/checkpoint-10/model.bin"',
            'echo \'{"base_model_name_or_path": "tiny", "r": 8}\' > '
            '"$BT_CHECKPOINT_DIR/checkpoint-10/adapter_config.json"',
            "echo written",
            "sleep 60",
        ],
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    wait_for(lambda: "written" in messages(client, job), 30, "the checkpoint to be written")
    found = client.checkpoints(project.id, job.id)
    assert client.job(project.id, job.id).training_job.status == S.RUNNING
    assert len(found) == 1
    ckpt = found[0]
    assert ckpt.checkpoint_id == "checkpoint-10"
    assert ckpt.checkpoint_type == "lora"
    assert ckpt.base_model == "tiny"
    assert ckpt.lora_adapter_config == {"base_model_name_or_path": "tiny", "r": 8}
    assert ckpt.size_bytes > 2048
    client.stop_job(project.id, job.id)
    wait_terminal(client, job)


def _assert_no_processes_left(home: Home, job_id: str) -> None:
    pids = [int(p) for p in (home.job_dir(job_id) / "nodes").read_text().split()]

    def gone() -> bool:
        for proc in psutil.process_iter(["pid"]):
            try:
                ours = proc.pid in pids or os.getpgid(proc.pid) in pids
                if ours and proc.status() != psutil.STATUS_ZOMBIE:
                    return False
            except (ProcessLookupError, psutil.Error):
                continue
        return True

    wait_for(gone, 10, f"every process of job {job_id} to end")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _no_numpy_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")


def _autogroup_nice(pid: int) -> int:
    """``/autogroup-N nice K`` -> K."""
    with open(f"/proc/{pid}/autogroup") as f:
        return int(f.read().split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux autogroup only")
def test_a_runner_yields_the_cpu_to_its_jobs_nodes(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    """A job printing flat out waited for a CPU behind its own runner (bench/): the
    runner's session is niced, the node's is not, and the log writer runs only on a CPU
    with nothing else to do."""
    from bt_jupyter.local.dispatch import RUNNER_NICENESS
    from bt_jupyter.local.store import Store

    job = submit(client, project, ["echo pid=$$", "exec sleep 60"])
    line = wait_for(
        lambda: next((m for m in messages(client, job) if m.startswith("pid=")), None),
        30,
        "the job to print its pid",
    )
    row = Store(local_home.db).job(job.id)
    assert row is not None
    assert row.runner_pid is not None
    node = int(line.removeprefix("pid="))
    assert (_autogroup_nice(row.runner_pid), _autogroup_nice(node)) == (RUNNER_NICENESS, 0)
    assert RUNNER_NICENESS > 0
    assert psutil.Process(node).nice() == 0  # the node's own threads are not niced either
    policies = [os.sched_getscheduler(t.id) for t in psutil.Process(row.runner_pid).threads()]
    assert policies.count(os.SCHED_IDLE) == 1  # the log writer
    client.stop_job(project.id, job.id)
    assert wait_terminal(client, job).status == S.STOPPED


def test_metrics_report_cpu_and_memory_per_node(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    busy = """
        import time
        x = bytearray(64 * 2**20)
        t = time.time()
        while time.time() - t < 5:
            pass
    """
    job = submit(
        client,
        project,
        ["python busy.py"],
        files={"busy.py": busy},
        compute=spec.Compute(node_count=2),
    )
    wait_status(client, job, S.RUNNING)

    def sampled() -> api.GetTrainingJobMetricsResponseV1 | None:
        metrics = client.metrics(project.id, job.id)
        nodes = metrics.per_node_metrics
        ready = len(nodes) == 2 and all(len(n.metrics.cpu_usage) >= 2 for n in nodes)
        return metrics if ready else None

    metrics = wait_for(sampled, 30, "two samples per node")
    for node in metrics.per_node_metrics:
        assert max(p.value for p in node.metrics.cpu_usage) > 0.3  # a busy loop uses a core
        assert max(p.value for p in node.metrics.cpu_memory_usage_bytes) > 64 * 2**20
    assert [n.node_id for n in metrics.per_node_metrics] == ["0", "1"]
    assert metrics.cpu_usage == metrics.per_node_metrics[0].metrics.cpu_usage
    assert metrics.gpu_utilization == {}
    client.stop_job(project.id, job.id)
    wait_terminal(client, job)


def test_min_level_filters_logs(client: ApiClient, project: api.TrainingProjectV1) -> None:
    job = submit(
        client,
        project,
        [
            "echo plain",
            "echo 'WARNING: careful'",
            "echo 'ERROR: broken' >&2",
            "echo 'DEBUG detail'",
        ],
    )
    assert wait_terminal(client, job).status == S.COMPLETED
    levels = {
        line.message: line.level
        for line in client.logs(project.id, job.id, limit=100)
        if line.replica == "0"
    }
    assert levels == {
        "plain": api.LogLevelV1.INFO,
        "WARNING: careful": api.LogLevelV1.WARNING,
        "ERROR: broken": api.LogLevelV1.ERROR,
        "DEBUG detail": api.LogLevelV1.DEBUG,
    }
    errors = client.logs(project.id, job.id, min_level=api.LogLevelV1.ERROR)
    assert [line.message for line in errors] == ["ERROR: broken"]
    newest = client.logs(project.id, job.id, direction=api.SortOrderV1.DESC, limit=1)
    assert newest[0].message == "Job COMPLETED"
