"""Start, find and stop the local service as a daemon that outlives the kernel.

Several kernels may ask at once: a file lock makes exactly one of them start it, the
others wait and use it. ``service.json`` says where it listens; a health check confirms
it answers before anyone is told it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import httpx
import psutil

from bt_jupyter.errors import BtJupyterError
from bt_jupyter.local.home import Home

START_TIMEOUT = 30.0


class ServiceError(BtJupyterError):
    """The local service could not be started or reached."""


@dataclass(frozen=True)
class ServiceInfo:
    url: str
    pid: int
    port: int
    api_key: str


def status(home: Home) -> ServiceInfo | None:
    """The running service, or None (a stale ``service.json`` is ignored)."""
    try:
        data = json.loads(home.service_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not psutil.pid_exists(data.get("pid", -1)):
        return None
    try:
        answer = httpx.get(f"{data['url']}/v1/local/health", timeout=2.0)
        if answer.status_code != 200 or answer.json().get("pid") != data["pid"]:
            return None
    except httpx.HTTPError:
        return None
    return ServiceInfo(url=data["url"], pid=data["pid"], port=data["port"], api_key=home.api_key())


def ensure_running(home: Home | None = None, port: int = 0) -> ServiceInfo:
    """The running service, started (once, whoever asks first) when there is none, on
    ``port`` when given (a free one otherwise)."""
    home = (home or Home.default()).ensure()
    found = status(home)
    if found is not None:
        return found
    with (home.root / "service.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = status(home)  # another process may have started it while we waited
        if found is not None:
            return found
        return _start(home, port)


def _start(home: Home, port: int = 0) -> ServiceInfo:
    home.api_key()
    command = [sys.executable, "-m", "bt_jupyter.local", "serve", "--home", str(home.root)]
    pid = _spawn_detached([*command, "--port", str(port)], home)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = status(home)
        if found is not None and found.pid == pid:
            return found
        if _exited(pid):
            raise ServiceError(f"the local service exited at start; see {home.service_log}")
        time.sleep(0.05)
    _exited(pid, kill=True)
    raise ServiceError(
        f"the local service did not answer within {START_TIMEOUT:.0f}s; see {home.service_log}"
    )


def _spawn_detached(argv: list[str], home: Home) -> int:
    """Start a process in its own session (it outlives the kernel), output to the log."""
    log = os.open(home.service_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log)
        os.close(null)


def _exited(pid: int, kill: bool = False) -> bool:
    """Reap our child if it ended (no zombie left); optionally kill it first."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        done, _ = os.waitpid(pid, 0 if kill else os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def stop(home: Home | None = None, timeout: float = 15.0) -> bool:
    """Stop the service (running jobs go on: their runners are separate). False if none ran."""
    home = home or Home.default()
    found = status(home)
    if found is None:
        return False
    os.kill(found.pid, signal.SIGTERM)
    try:
        psutil.Process(found.pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(found.pid, signal.SIGKILL)
    return True
