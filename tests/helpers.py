"""Test helpers: bundles, jobs, waiting on conditions with deadlines (never sleep-and-hope)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psutil

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.jobs import Job
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home

T = TypeVar("T")


#: A ``sitecustomize`` that resolves ``*.localhost`` to 127.0.0.1, for a truss process
#: pointed at ``http://localhost:8000`` (truss maps it to ``api.localhost``).
RESOLVER = """
import socket
_getaddrinfo = socket.getaddrinfo
def _loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = _loopback
"""


@contextmanager
def running_service(home: Home, port: int = 0, **env: str) -> Iterator[daemon.ServiceInfo]:
    """Start a service on ``home`` (on ``port``, if given) with extra environment
    settings; stop it afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        info = daemon.ensure_running(home, port)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield info
    finally:
        daemon.stop(home)
        _stop_deployments(home)
        wait_for(lambda: not _standby_runners(home), 60, "standby runner to exit")


def _stop_deployments(home: Home) -> None:
    """Serving processes outlive the service (like jobs): end those a test left running."""
    from bt_jupyter.local.store import Store

    for deployment in Store(home.db).deployments():
        if deployment.pid and deployment.status in ("DEPLOYING", "ACTIVE"):
            try:
                psutil.Process(deployment.pid).terminate()
            except psutil.Error:
                continue


def _standby_runners(home: Home) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "--standby" in cmd and str(home.root) in cmd:
            found.append(proc)
    return found


def _cpu_share() -> float:
    """The share of a CPU a runnable process gets now: 1 on an idle machine, 1/3 when
    six processes want two CPUs (/proc/loadavg's running count, which includes us)."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 1.0
    return min(1.0, (os.cpu_count() or 1) / max(running, 1))


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail once ``timeout`` seconds of
    the machine's time have gone by without it.

    The timeout guards against a hang; it is not a speed test. A second on a busy machine
    (CI's two cores beside training jobs, `yes > /dev/null`) counts only as the share of
    a CPU a process got in it, so a slow machine is waited for and a stuck one still is
    not."""
    waited, last = 0.0, time.monotonic()
    while True:
        value = check()
        if value:
            return value
        now = time.monotonic()
        waited += (now - last) * _cpu_share()
        last = now
        if waited > timeout:
            raise AssertionError(f"timed out after {timeout}s of CPU share waiting for {what}")
        time.sleep(every)


def wait_job(job: Job, timeout: float = 240) -> Job:
    """``job.wait()`` on :func:`wait_for`'s clock: a job that builds torch's environment
    on a busy machine is waited for, a stuck one is not. Raises JobFailed as ``wait``."""
    wait_for(lambda: job.refresh().status.is_terminal, timeout, f"job {job.id} to end", every=0.5)
    return job.wait()


def paced_lines(count: int) -> str:
    """A start command that prints ``line 0`` .. ``line {count-1}``, 200 lines at a time
    10 ms apart. Read back through Baseten's time-window log API, a millisecond holding a
    full page of lines cannot be read whole (the documented limit, met on purpose by
    bench/cloud_log_download.py); a busy machine would stamp an unpaced job's lines that
    densely, so tests of whole reads use this one."""
    return (
        'python -c "import time\n'
        f"for i in range({count}):\n"
        "    print(f'line {i}', flush=i % 200 == 199)\n"
        '    if i % 200 == 199: time.sleep(0.01)"'
    )


#: Start commands that leave a daemon behind the job's back (each prints "pid N"): a new
#: session (``setsid -f``), and the classic double fork (fork, setsid, fork again, the
#: middle one exits). What a job's containment must still find and end.
SETSID = "setsid -f sh -c 'echo pid $$; exec sleep 900'"
DOUBLE_FORK = (
    "python -c 'import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    '        print("pid", os.getpid(), flush=True); time.sleep(900)\n'
    "    os._exit(0)\n"
    "os.wait()'"
)

#: Start commands of a raw job that needs packages: it installs them, as on a Baseten node
#: (the job sees only its image and what its start commands install).
INSTALL = "pip install -r requirements.txt"


def requirements(*dists: str) -> dict[str, str]:
    """A ``requirements.txt`` pinning installed distributions (``torch`` -> ``torch==2.13.0``)."""
    from importlib import metadata

    from packaging.version import Version

    pins = [f"{d}=={Version(metadata.version(d)).public}" for d in dists]
    return {"requirements.txt": "".join(f"{p}\n" for p in pins)}


def in_job_runtime() -> dict[str, str]:
    """bt_jupyter's in-job runtime as files, as a packaged cell carries it (a job's image
    has no bt_jupyter: ``from bt_jupyter.runtime import log_metrics`` needs these)."""
    from bt_jupyter.packaging.bundle import in_job_files

    return {path: data.decode() for path, data in in_job_files().items()}


def bundle(files: dict[str, str]) -> bytes:
    """A gzipped tar of ``{path: text}`` (scripts are dedented); the same files give the
    same bytes (no time in the tar or the gzip header)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in sorted(files.items()):
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)


def submit(
    client: ApiClient,
    project: api.TrainingProjectV1,
    commands: list[str],
    files: dict[str, str] | None = None,
    **job: object,
) -> api.TrainingJobV1:
    artifacts = [client.upload_artifact(bundle(files))[0]] if files else []
    runtime = job.pop("runtime", None) or spec.Runtime()
    assert isinstance(runtime, spec.Runtime)
    runtime = runtime.model_copy(update={"start_commands": commands})
    training_job = spec.TrainingJob(
        image=spec.Image(base_image="python:3.11-slim"), runtime=runtime, **job
    )
    return client.create_job(project.id, training_job, artifacts)


def checkpointing_job(
    client: ApiClient, project: api.TrainingProjectV1, names: list[str]
) -> api.TrainingJobV1:
    """A COMPLETED job that wrote one small checkpoint per name, in that order."""
    commands = [
        f'mkdir -p "$BT_CHECKPOINT_DIR/{n}" && echo "{n}" > "$BT_CHECKPOINT_DIR/{n}/weights.txt"'
        f" && sleep 0.05"
        for n in names
    ]
    job = submit(
        client,
        project,
        commands,
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    done = wait_terminal(client, job)
    assert done.status == spec.TrainingJobStatus.COMPLETED, done.error_message
    return job


def wait_terminal(
    client: ApiClient, job: api.TrainingJobV1, timeout: float = 120
) -> api.TrainingJobV1:
    def done() -> api.TrainingJobV1 | None:
        current = client.job(job.training_project_id, job.id).training_job
        return current if current.status.is_terminal else None

    return wait_for(done, timeout, f"job {job.id} to end", every=0.1)


def wait_status(
    client: ApiClient, job: api.TrainingJobV1, status: spec.TrainingJobStatus, timeout: float = 60
) -> api.TrainingJobV1:
    def reached() -> api.TrainingJobV1 | None:
        current = client.job(job.training_project_id, job.id).training_job
        if current.status.is_terminal and current.status != status:
            raise AssertionError(f"job ended {current.status.short}: {current.error_message}")
        return current if current.status == status else None

    return wait_for(reached, timeout, f"job {job.id} to reach {status.short}", every=0.05)


def messages(client: ApiClient, job: api.TrainingJobV1, node: str | None = "any") -> list[str]:
    lines = client.all_logs(job.training_project_id, job.id)
    return [line.message for line in lines if node == "any" or line.replica == node]
