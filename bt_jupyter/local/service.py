"""Run the local service in this process: bind 127.0.0.1 on a free port and serve.

Started by :mod:`bt_jupyter.local.daemon` (``bt-jupyter local start`` or the client's
automatic start) as ``python -m bt_jupyter.local serve``. It writes ``service.json`` (pid,
port, url) once it listens, and removes it when it stops.
"""

from __future__ import annotations

import json
import os
import socket
import time

import uvicorn

from bt_jupyter.local.app import build_app
from bt_jupyter.local.dispatch import Dispatcher
from bt_jupyter.local.home import Home, write_private
from bt_jupyter.local.settings import Settings
from bt_jupyter.local.state import ServiceState
from bt_jupyter.local.store import Store

#: How long a stopping service lets requests in flight finish (a long-poll is cut short).
GRACEFUL_STOP_S = 2


def serve(home: Home, port: int = 0) -> None:
    os.umask(0o077)  # what it, its runners and their jobs write is this user's alone
    home.ensure()
    sock = _listen(port)  # first: a port it cannot have leaves no state behind
    bound = sock.getsockname()[1]
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a setting a person wrote: one line, which the daemon quotes
        sock.close()
        raise SystemExit(str(exc)) from None
    store = Store(home.db)
    dispatcher = Dispatcher(home, store)
    state = ServiceState(home, settings, dispatcher)
    app = build_app(state)

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        # a stop must not wait out the followers' long-polls: they reconnect on their own
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
    )
    server = uvicorn.Server(config)
    dispatcher.start()
    state.start()
    info = {
        "pid": os.getpid(),
        "port": bound,
        "url": f"http://127.0.0.1:{bound}",
        "started_at": time.time(),
    }
    write_private(home.service_file, json.dumps(info))
    try:
        server.run(sockets=[sock])
    finally:
        state.close()
        dispatcher.close()
        try:
            current = json.loads(home.service_file.read_text())
            if current.get("pid") == os.getpid():
                home.service_file.unlink()
        except (FileNotFoundError, ValueError):
            pass


def _listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port``; exits with one line saying why not (the
    daemon quotes that line in the error its caller sees)."""
    # IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted connections: without
    # it every response after the first on a connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except (OSError, OverflowError) as exc:
        sock.close()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}: {why.lower()}") from None
    return sock
