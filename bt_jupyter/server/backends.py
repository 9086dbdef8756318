"""The server extension's configuration and its one :class:`~bt_jupyter.jobs.Client` per
backend, created on first use and closed when the server stops.

The clients are synchronous (httpx): :meth:`BtJupyterServer.run` calls them on a thread
pool of this extension, so a 30 s log long-poll never blocks the server's event loop or
takes the threads the server itself uses.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from traitlets import Enum, Int, Unicode
from traitlets.config import LoggingConfigurable

from bt_jupyter.errors import AuthError, BtJupyterError, ConnectionFailed, MissingApiKey
from bt_jupyter.jobs import Client
from bt_jupyter.server.errors import BackendUnavailable, BadRequest

T = TypeVar("T")
BACKENDS = ("local", "baseten")


class BtJupyterServer(LoggingConfigurable):
    """``c.BtJupyterServer.default_backend = "baseten"`` in ``jupyter_server_config.py``."""

    default_backend = Enum(
        list(BACKENDS),
        default_value="local",
        help="The backend of requests that do not name one (?backend=local|baseten).",
    ).tag(config=True)

    local_home = Unicode(
        "",
        help="State folder of the local service; empty: $BT_JUPYTER_HOME or ~/.bt_jupyter.",
    ).tag(config=True)

    max_workers = Int(
        32, help="Threads for calls to the backends (each open log long-poll holds one)."
    ).tag(config=True)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._clients: dict[str, Client] = {}
        self._retired: list[Client] = []  # may still serve calls in flight: closed at stop
        self._lock = threading.Lock()  # held briefly: also taken on the event loop
        self._creating = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.closed = False

    def backend(self, name: str | None) -> str:
        """The backend a request names (``None`` or ``""``: the default); else 400."""
        if not name:
            return str(self.default_backend)
        if name not in BACKENDS:
            raise BadRequest(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
        return name

    def client(self, backend: str) -> Client:
        """The backend's client, created on first use (blocking: call it from a thread)."""
        with self._creating:  # may start the local service: seconds, off the event loop
            with self._lock:
                self._check_open()
                found = self._clients.get(backend)
            if found is not None:
                return found
            created = self._create(backend)
            with self._lock:
                if self.closed:
                    created.close()
                self._check_open()
                self._clients[backend] = created
            return created

    def _check_open(self) -> None:
        if self.closed:
            raise BackendUnavailable("the Jupyter server is shutting down")

    def _create(self, backend: str) -> Client:
        try:
            return Client.named(backend, Path(self.local_home) if self.local_home else None)
        except MissingApiKey:
            raise  # 401, saying how to set BASETEN_API_KEY
        except BtJupyterError as exc:
            raise BackendUnavailable(
                f"the {backend} training service did not start: {exc}"
            ) from exc

    def forget(self, backend: str, client: Client) -> None:
        """Drop a client that failed, so the next request makes a fresh one: the local
        service is restarted (on its new port), a new API key is read."""
        with self._lock:
            if self._clients.get(backend) is client:
                del self._clients[backend]
                self._retired.append(client)

    async def run(self, backend: str, work: Callable[[Client], T]) -> T:
        """``work(client)`` on this extension's threads."""
        return await self.run_plain(functools.partial(self._call, backend, work))

    async def run_plain(self, work: Callable[[], T]) -> T:
        """``work()`` (blocking) on this extension's threads."""
        with self._lock:
            self._check_open()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix="bt-jupyter"
                )
            executor = self._executor
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    def _call(self, backend: str, work: Callable[[Client], T]) -> T:
        client = self.client(backend)
        try:
            return work(client)
        except (ConnectionFailed, AuthError) as exc:
            self.forget(backend, client)
            advice = client.backend.refused_key_advice
            if advice and isinstance(exc, AuthError):
                raise BackendUnavailable(advice) from exc
            raise

    def close(self) -> None:
        """Close every client and the threads (the server is stopping)."""
        with self._lock:
            self.closed = True
            clients = [*self._clients.values(), *self._retired]
            self._clients, self._retired = {}, []
        for client in clients:
            client.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
