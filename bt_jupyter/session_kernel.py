"""Runs inside a job in session mode: the node's live IPython kernel (ipykernel), which
``%%bt_remote`` cells run in.

The kernel listens on 127.0.0.1 only, and its connection file (ports and signing key) is
``~/.bt_jupyter/session/kernel.json``, 0600 in a 0700 folder: a client reaches it only
through the node's SSH server, and only after reading that file there. Rich output,
interrupts and ``%debug`` are ipykernel's own.

Besides cells, a client talks to the comm target :data:`TRANSFER_TARGET`: ``push`` and
``pull`` values (pickled with out-of-band buffers, so an array travels as its own bytes),
and ``status`` (idle time and timeout, for the widget's countdown).

The session ends itself after ``idle_timeout`` seconds with no cell and no transfer.

Like runtime.py this module travels in every bundle: it imports only the standard
library; ipykernel and cloudpickle are the job's requirements.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any

SESSION_DIR = Path(".bt_jupyter") / "session"
CONNECTION_FILE = "kernel.json"
TRANSFER_TARGET = "bt_jupyter.transfer"
#: A session with no cell for this long stops (``--timeout``).
DEFAULT_IDLE_TIMEOUT_S = 30 * 60
#: What a session prints when it is ready; what it prints when it stops for idleness.
READY = "bt_jupyter: session kernel ready"
IDLE_STOP = "bt_jupyter: session idle for"
#: What a failed cell's process prints when it stays for ``%bt_debug``.
POST_MORTEM = "bt_jupyter: the failed process is kept for debugging"


def connection_file(home: Path | None = None) -> Path:
    """Where a node's kernel writes its connection file (``home``: the node's $HOME)."""
    return (home if home is not None else Path.home()) / SESSION_DIR / CONNECTION_FILE


class IdleWatch:
    """Counts the time since the last cell or transfer ended; stops the session after
    ``timeout`` seconds of it (never during a cell)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last = time.monotonic()
        self.busy = 0

    def begin(self, *_: object) -> None:
        self.busy += 1

    def end(self, *_: object) -> None:
        self.busy = max(0, self.busy - 1)
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    @property
    def idle_for(self) -> float:
        return 0.0 if self.busy else time.monotonic() - self.last

    def wait_idle(self) -> None:
        while self.idle_for < self.timeout:
            time.sleep(min(1.0, max(0.05, self.timeout - self.idle_for)))


def serve(namespace: dict[str, Any], idle_timeout: float, echo: bool = True) -> int:
    """Run the node's kernel until the session is stopped or idle; 0 when idle."""
    # debugpy (imported by ipykernel) warns about frozen modules in the job's log
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    from ipykernel.kernelapp import IPKernelApp

    path = connection_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a file of an earlier kernel on this node names dead ports
    app = IPKernelApp.instance()
    app.initialize(  # type: ignore[no-untyped-call]
        [
            "--ip=127.0.0.1",
            f"--IPKernelApp.connection_file={path}",
            # a cell's output also goes to the job's log (the record of the session)
            f"--IPKernelApp.quiet={not echo}",
            # Python's output only: with the descriptors captured too, each line reached
            # the log twice (echoed, then captured again)
            "--IPKernelApp.capture_fd_output=False",
            # no "to connect another client" advice in the job's log
            "--IPKernelApp.log_level=CRITICAL",
            # the notebook keeps the history: no SQLite write per remote cell
            "--HistoryManager.enabled=False",
        ]
    )
    shell = app.shell
    assert shell is not None
    shell.user_ns.update({k: v for k, v in namespace.items() if k != "__builtins__"})
    watch = IdleWatch(idle_timeout)
    shell.events.register("pre_execute", watch.begin)
    shell.events.register("post_execute", watch.end)
    app.kernel.comm_manager.register_target(
        TRANSFER_TARGET, lambda comm, _msg: _transfer(comm, shell.user_ns, watch)
    )

    def stop_when_idle() -> None:
        watch.wait_idle()
        while getattr(app, "io_loop", None) is None:  # start() sets it
            time.sleep(0.05)
        print(
            f"{IDLE_STOP} {_minutes(idle_timeout)} (--timeout): stopping",
            file=sys.__stdout__,
            flush=True,
        )
        app.io_loop.add_callback(app.io_loop.stop)

    threading.Thread(target=stop_when_idle, name="idle-watch", daemon=True).start()
    print(f"{READY} on node {os.environ.get('BT_NODE_RANK', '0')}", file=sys.__stdout__, flush=True)
    app.start()  # type: ignore[no-untyped-call]
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return 0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.4g} min" if seconds >= 120 else f"{seconds:g} s"


def _transfer(comm: Any, user_ns: dict[str, Any], watch: IdleWatch) -> None:
    """Answer a client's ``push``, ``pull`` and ``status`` messages on ``comm``."""

    def on_msg(msg: dict[str, Any]) -> None:
        watch.touch()
        data = msg["content"]["data"]
        try:
            reply, buffers = _answer(data, msg.get("buffers") or [], user_ns, watch)
        except Exception as exc:
            reply, buffers = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, []
        comm.send({"request": data.get("request"), **reply}, buffers=buffers)
        watch.touch()

    comm.on_msg(on_msg)


def _answer(
    data: dict[str, Any], buffers: list[Any], user_ns: dict[str, Any], watch: IdleWatch
) -> tuple[dict[str, Any], list[Any]]:
    op = data.get("op")
    if op == "status":
        return {
            "ok": True,
            "idle_for": watch.idle_for,
            "idle_timeout": watch.timeout,
            "node": int(os.environ.get("BT_NODE_RANK", "0")),
            "pid": os.getpid(),
        }, []
    if op == "push":  # the imports the values need, then the values (capture.py's rules)
        for statement in data.get("imports") or []:
            exec(str(statement), user_ns)
        values = pickle.loads(buffers[0], buffers=buffers[1:])
        user_ns.update(values)
        return {"ok": True, "names": sorted(values)}, []
    if op == "pull":
        import cloudpickle

        names = [str(n) for n in data.get("names") or []]
        missing = [n for n in names if n not in user_ns]
        if missing:
            return {"ok": False, "missing": missing}, []
        out: list[pickle.PickleBuffer] = []
        payload = cloudpickle.dumps(
            {n: user_ns[n] for n in names}, protocol=5, buffer_callback=out.append
        )
        raws = [b.raw() for b in out]
        size = len(payload) + sum(r.nbytes for r in raws)
        limit = int(data.get("max_bytes") or 0)
        if limit and size > limit:
            return {"ok": False, "too_big": size, "limit": limit}, []
        return {"ok": True, "size": size}, [payload, *raws]
    return {"ok": False, "error": f"unknown request {op!r}"}, []
