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
from pathlib import Path

import httpx
import psutil

from bt_jupyter.errors import BtJupyterError
from bt_jupyter.local.home import Home

START_TIMEOUT = 30.0
#: How long a start waits for a previous service that no longer answers to exit (it may
#: be finishing a graceful stop) before it starts another on the same state.
PREVIOUS_EXIT_TIMEOUT = 15.0
#: The longest reason from service.log that an error message quotes.
MAX_REASON = 200
PORT_RANGE = "1..65535, or 0 for any free port"


class ServiceError(BtJupyterError):
    """The local service could not be started or reached."""


class PortError(ServiceError, ValueError):
    """A port the service cannot listen on: out of range, not a number."""


@dataclass(frozen=True)
class ServiceInfo:
    url: str
    pid: int
    port: int
    api_key: str


def status(home: Home) -> ServiceInfo | None:
    """The running service, or None (a stale or unreadable ``service.json`` is ignored)."""
    try:
        data = json.loads(home.service_file.read_text())
        pid, port, url = int(data["pid"]), int(data["port"]), str(data["url"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not psutil.pid_exists(pid):
        return None
    try:
        answer = httpx.get(f"{url}/v1/local/health", timeout=2.0)
        if answer.status_code != 200 or answer.json().get("pid") != pid:
            return None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return ServiceInfo(url=url, pid=pid, port=port, api_key=home.api_key())


def check_port(port: object) -> int:
    """``port`` if the service can be asked to listen on it (0: any free one); checked
    before anything starts, so a typo never leaves a half-started service behind."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise PortError(f"port {str(port)[:20]!r} is not a whole number: give {PORT_RANGE}")
    if not 0 <= port <= 65535:
        raise PortError(f"port {str(port)[:20]} is out of range: give {PORT_RANGE}")
    return port


def parse_port(text: str) -> int:
    """A port typed on a command line (``--port``), checked as :func:`check_port` does."""
    try:
        value = int(text.strip())
    except ValueError:
        raise PortError(f"--port {text[:20]!r} is not a number: give {PORT_RANGE}") from None
    return check_port(value)


def ensure_running(home: Home | None = None, port: int = 0) -> ServiceInfo:
    """The running service, started (once, whoever asks first) when there is none, on
    ``port`` when given (a free one otherwise)."""
    check_port(port)
    home = (home or Home.default()).ensure()
    found = status(home)
    if found is not None:
        return found
    with (home.root / "service.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = status(home)  # another process may have started it while we waited
        if found is not None:
            return found
        found = _await_previous(home)
        if found is not None:
            return found
        return _start(home, port)


@dataclass(frozen=True)
class Locator:
    """How a client finds the local service again after a restart (on a new port,
    perhaps): it reads ``service.json`` again and, when ``start``, starts the service
    if none runs (the kind ``ApiClient.local()`` makes)."""

    home: Home
    start: bool = True

    def find(self) -> tuple[str, str] | None:
        """(url, api key) of the running service; None when none runs (and ``start`` is off)."""
        info = ensure_running(self.home) if self.start else status(self.home)
        return (info.url, info.api_key) if info is not None else None

    @property
    def advice(self) -> str:
        return (
            f"the local service is not running (state in {self.home.root}): start it with "
            "`bt-jupyter local start`"
        )


def _previous(home: Home) -> psutil.Process | None:
    """The service named by ``service.json`` while it still lives (a zombie does not)."""
    try:
        pid = int(json.loads(home.service_file.read_text()).get("pid", -1))
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        command = process.cmdline()
    except (OSError, ValueError, AttributeError, psutil.Error):
        return None
    return process if "bt_jupyter.local" in command and str(home.root) in command else None


def _await_previous(home: Home) -> ServiceInfo | None:
    """Wait for a service that no longer answers (one finishing a graceful stop) to exit,
    so that two never run on the same state; if it answers again (it was only slow), it."""
    previous = _previous(home)
    deadline = time.monotonic() + PREVIOUS_EXIT_TIMEOUT
    while previous is not None and time.monotonic() < deadline:
        try:
            previous.wait(0.2)
            return None
        except psutil.TimeoutExpired:
            pass
        except psutil.Error:
            return None
        with contextlib.suppress(psutil.Error):
            if previous.status() == psutil.STATUS_ZOMBIE:
                return None
        found = status(home)
        if found is not None:
            return found
    return None


def _start(home: Home, port: int = 0) -> ServiceInfo:
    home.api_key()
    command = [sys.executable, "-m", "bt_jupyter.local", "serve", "--home", str(home.root)]
    log_start = _size(home.service_log)
    pid = _spawn_detached([*command, "--port", str(port)], home)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = status(home)
        if found is not None and found.pid == pid:
            return found
        if _exited(pid):
            reason = _last_reason(home, log_start)
            raise ServiceError(
                f"the local service exited at start: {reason}; see {home.service_log}"
            )
        time.sleep(0.05)
    _exited(pid, kill=True)
    raise ServiceError(
        f"the local service did not answer within {START_TIMEOUT:.0f}s; see {home.service_log}"
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _last_reason(home: Home, offset: int) -> str:
    """The last meaningful line the service wrote to its log since ``offset``: why it
    exited (``cannot listen on 127.0.0.1:80: address already in use``)."""
    try:
        with home.service_log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines()]
    meaningful = [line for line in lines if line and not set(line) <= set("^~ ")]
    if not meaningful:
        return "it wrote no reason"
    reason = meaningful[-1]
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


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
    try:
        os.kill(found.pid, signal.SIGTERM)
        psutil.Process(found.pid).wait(timeout)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGKILL)
    return True
