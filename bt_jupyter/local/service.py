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


def serve(home: Home, port: int = 0) -> None:
    home.ensure()
    settings = Settings.from_env()
    store = Store(home.db)
    dispatcher = Dispatcher(home, store)
    app = build_app(ServiceState(home, settings, dispatcher))

    # IPPROTO_TCP (not 0) so asyncio sets TCP_NODELAY on accepted connections: without
    # it every response after the first on a connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    bound = sock.getsockname()[1]

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    dispatcher.start()
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
        dispatcher.close()
        try:
            current = json.loads(home.service_file.read_text())
            if current.get("pid") == os.getpid():
                home.service_file.unlink()
        except (FileNotFoundError, ValueError):
            pass
