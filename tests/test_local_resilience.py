"""The service as a daemon: start once for many callers, survive restarts, stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bt_jupyter import spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import Store
from tests.helpers import messages, running_service, submit, wait_for, wait_terminal

S = spec.TrainingJobStatus


def test_service_killed_and_restarted_while_a_job_runs(tmp_path: Path) -> None:
    home = Home(tmp_path)
    script = """
        import time
        for i in range(60):
            print(f"line {i}", flush=True)
            time.sleep(0.05)
    """
    with running_service(home) as first, ApiClient.local(home.root) as client:
        project = client.upsert_project("restart")
        job = submit(client, project, ["python count.py"], files={"count.py": script})
        wait_for(lambda: "line 5" in messages(client, job), 30, "the job to print")
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(first.pid) or _zombie(first.pid), 10, "the kill")
        with ApiClient.local(home.root) as again:  # starts a new service on demand
            assert daemon.status(home) is not None
            assert daemon.status(home).pid != first.pid  # type: ignore[union-attr]
            done = wait_terminal(again, job, timeout=60)
            assert done.status == S.COMPLETED
            lines = list(messages(again, job, node="0"))
            assert lines == [f"line {i}" for i in range(60)]


def test_jobs_that_end_while_the_service_is_down_keep_their_real_outcome(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path)
    with running_service(home) as first, ApiClient.local(home.root) as client:
        project = client.upsert_project("down")
        ok = submit(client, project, ["echo go", "sleep 1", "echo done"])
        bad = submit(client, project, ["echo go", "sleep 1", "exit 7"])
        for job in (ok, bad):
            wait_for(lambda job=job: "go" in messages(client, job), 30, "the jobs to start")
        os.kill(first.pid, signal.SIGKILL)
        store = Store(home.db)
        runners = [store.job(j.id).runner_pid for j in (ok, bad)]  # type: ignore[union-attr]
        wait_for(
            lambda: all(not psutil.pid_exists(p) or _zombie(p) for p in runners if p),
            30,
            "both jobs to end while no service runs",
        )
        with ApiClient.local(home.root) as again:
            assert again.job(project.id, ok.id).training_job.status == S.COMPLETED
            failed = again.job(project.id, bad.id).training_job
            assert failed.status == S.FAILED
            assert failed.error_message == "node 0 exited with code 7"
            assert messages(again, ok, node="0") == ["go", "done"]


def test_a_dead_runner_fails_its_job_and_leaves_no_processes(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with running_service(home), ApiClient.local(home.root) as client:
        project = client.upsert_project("runner-death")
        job = submit(client, project, ["echo started", "sleep 120"])
        wait_for(lambda: "started" in messages(client, job), 30, "the job to start")
        runner = client.job(project.id, job.id)
        row = Store(home.db).job(job.id)
        assert row is not None
        assert row.runner_pid is not None
        os.kill(row.runner_pid, signal.SIGKILL)
        done = wait_terminal(client, job, timeout=30)
        assert runner.training_job.status == S.RUNNING
        assert done.status == S.FAILED
        assert done.error_message is not None
        assert "ended without finishing" in done.error_message
        node_pid = int((home.job_dir(job.id) / "nodes").read_text().split()[0])
        wait_for(lambda: not psutil.pid_exists(node_pid) or _zombie(node_pid), 10, "nodes killed")


def test_stop_grace_then_sigkill_for_a_job_that_ignores_sigterm(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with running_service(home, BT_JUPYTER_STOP_GRACE_S="1"), ApiClient.local(home.root) as client:
        project = client.upsert_project("stubborn")
        job = submit(
            client, project, ["trap '' TERM", "echo ignoring", "while true; do sleep 0.1; done"]
        )
        wait_for(lambda: "ignoring" in messages(client, job), 30, "the job to start")
        started = time.monotonic()
        client.stop_job(project.id, job.id)
        done = wait_terminal(client, job, timeout=20)
        took = time.monotonic() - started
        assert done.status == S.STOPPED
        assert 0.9 <= took < 10, took
        assert any("Stop requested" in m for m in messages(client, job))
        node_pid = int((home.job_dir(job.id) / "nodes").read_text().split()[0])
        assert not psutil.pid_exists(node_pid) or _zombie(node_pid)


def test_require_gpu_setting_makes_a_gpu_job_deploy_failed(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with running_service(home, BT_JUPYTER_REQUIRE_GPU="1"), ApiClient.local(home.root) as client:
        project = client.upsert_project("needs-gpu")
        job = submit(client, project, ["echo never"], compute=spec.Compute(accelerator="A100:8"))
        done = wait_terminal(client, job)
        assert done.status == S.DEPLOY_FAILED
        assert done.error_message is not None
        assert "asks for 1 x A100:8" in done.error_message
        cpu_job = submit(client, project, ["echo fine"])
        assert wait_terminal(client, cpu_job).status == S.COMPLETED


def test_many_callers_start_exactly_one_service(tmp_path: Path) -> None:
    code = (
        "import json, sys; from bt_jupyter.local import daemon;"
        "from bt_jupyter.local.home import Home;"
        "i = daemon.ensure_running(Home(sys.argv[1])); print(json.dumps([i.pid, i.url]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        answers = {tuple(json.loads(p.communicate(timeout=60)[0])) for p in procs}
        assert len(answers) == 1, answers
        ((pid, url),) = answers
        assert url.startswith("http://127.0.0.1:")
        assert psutil.Process(pid).is_running()
    finally:
        assert daemon.stop(Home(tmp_path))


def test_api_key_file_is_private_and_the_service_binds_loopback(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with running_service(home) as info:
        assert oct(home.api_key_file.stat().st_mode & 0o777) == "0o600"
        listening = [
            c.laddr
            for c in psutil.Process(info.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", info.port)]


def test_cli_start_status_stop(tmp_path: Path) -> None:
    env = {**os.environ, "BT_JUPYTER_HOME": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bt_jupyter.cli", *args], env=env, capture_output=True, text=True
        )

    assert cli("local", "status").returncode == 3
    started = cli("local", "start")
    assert started.returncode == 0
    assert "local service running at http://127.0.0.1:" in started.stdout
    status = cli("local", "status")
    assert status.returncode == 0
    assert status.stdout == started.stdout
    assert cli("local", "stop").stdout.strip() == "local service stopped"
    assert cli("local", "status").returncode == 3


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
