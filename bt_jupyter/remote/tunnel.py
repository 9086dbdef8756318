"""One SSH connection to one node of a job, as ``truss ssh`` makes it (asyncssh, not the
ssh binary): TLS to the proxy address ``ssh/sign`` returned, the JWT length-prefixed, one
status byte, then SSH as ``baseten`` with the signed certificate. Over it: commands on the
node, and local ports forwarded to the node's loopback ports (the session kernel's).

asyncssh runs on one event loop in a daemon thread of this process; the notebook's
kernel calls in from its own thread and waits with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bt_jupyter import api
from bt_jupyter._asyncssh import asyncssh
from bt_jupyter.errors import SessionEnded, SessionRefused

T = TypeVar("T")
SSH_USER = "baseten"
CONNECT_TIMEOUT_S = 30.0
#: SSH flow control: how much a channel may have in flight, and the largest packet.
WINDOW_BYTES = 16 * 1024 * 1024
MAX_PACKET_BYTES = 256 * 1024


class _Loop:
    """The event loop every tunnel of this process runs on."""

    _lock = threading.Lock()
    _current: _Loop | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="bt-ssh", daemon=True).start()

    @classmethod
    def get(cls) -> _Loop:
        with cls._lock:
            if cls._current is None:
                cls._current = cls()
            return cls._current

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


class _ProxyRefused(Exception):
    pass


class TunnelClosed(SessionEnded):
    """The SSH connection went away (the proxy restarted, the network dropped): a new
    one may work."""


class _Handshake(asyncio.Protocol):
    """Send the JWT, read the status byte, then hand the connection to SSH."""

    def __init__(
        self, token: str, factory: Callable[[], asyncio.Protocol], done: asyncio.Future[Any]
    ) -> None:
        self.token, self.factory, self.done = token, factory, done
        self.transport: asyncio.Transport | None = None
        self.refusal = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        data = self.token.encode()
        transport.write(struct.pack("!I", len(data)) + data)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.refusal or data[:1] != b"\x00":
            self.refusal += data  # status byte, then (on our proxy) the reason
            return
        session = self.factory()
        self.transport.set_protocol(session)
        session.connection_made(self.transport)
        if len(data) > 1:
            session.data_received(data[1:])
        self.done.set_result((self.transport, session))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            why = self.refusal[1:].decode("utf-8", "replace").strip()
            self.done.set_exception(_ProxyRefused(why or "is the job's node running?"))


class _ProxyTunnel:
    """asyncssh's tunnel seam: the SSH connection runs over the admitted proxy stream."""

    def __init__(self, token: str, tls: ssl.SSLContext | None) -> None:
        self.token, self.tls = token, tls

    async def create_connection(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[asyncio.Transport, asyncio.Protocol]] = loop.create_future()
        await loop.create_connection(
            lambda: _Handshake(self.token, factory, done),
            host,
            port,
            ssl=self.tls,
            server_hostname=host if self.tls else None,
        )
        return await done

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class NodeTunnel:
    """An open SSH connection to one node."""

    def __init__(self, conn: asyncssh.SSHClientConnection, node: int) -> None:
        self.conn, self.node = conn, node
        self._loop = _Loop.get()
        self.listeners: list[asyncssh.SSHListener] = []

    @classmethod
    def open(
        cls,
        signed: api.SignSSHCertificateResponseV1,
        key: asyncssh.SSHKey,
        tls: ssl.SSLContext | None,
        node: int,
    ) -> NodeTunnel:
        conn = _Loop.get().run(_connect(signed, key, tls), CONNECT_TIMEOUT_S + 5)
        return cls(conn, node)

    @property
    def is_open(self) -> bool:
        return not self.conn.is_closed()

    def run(self, command: str, timeout: float = 30.0) -> asyncssh.SSHCompletedProcess:
        """Run ``command`` on the node; :class:`TunnelClosed` if the connection is gone."""
        try:
            return self._loop.run(self.conn.run(command, check=False, encoding="utf-8"), timeout)
        except (OSError, asyncssh.Error) as exc:
            raise TunnelClosed(f"the connection to node {self.node} closed: {exc}") from None

    def forward(self, port: int) -> int:
        """A local port (127.0.0.1) that reaches ``port`` on the node's loopback."""

        async def listen() -> asyncssh.SSHListener:
            return await self.conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", port)

        try:
            listener = self._loop.run(listen(), CONNECT_TIMEOUT_S)
        except (OSError, asyncssh.Error) as exc:
            raise TunnelClosed(f"the connection to node {self.node} closed: {exc}") from None
        self.listeners.append(listener)
        return listener.get_port()

    def close(self) -> None:
        async def close() -> None:
            for listener in self.listeners:
                listener.close()
            self.conn.close()
            await self.conn.wait_closed()

        with contextlib.suppress(TimeoutError, OSError):
            self._loop.run(close(), 10)


async def _connect(
    signed: api.SignSSHCertificateResponseV1, key: asyncssh.SSHKey, tls: ssl.SSLContext | None
) -> asyncssh.SSHClientConnection:
    host, _, port = signed.proxy_address.rpartition(":")
    where = f"the SSH proxy at {signed.proxy_address}"
    try:
        cert = asyncssh.import_certificate(signed.ssh_certificate)
        return await asyncio.wait_for(
            asyncssh.connect(
                host,
                int(port),
                tunnel=_ProxyTunnel(signed.jwt, tls),
                username=SSH_USER,
                client_keys=[(key, cert)],
                known_hosts=None,  # the proxy's TLS certificate is what is checked
                agent_path=None,
                config=[],
                preferred_auth="publickey",
                keepalive_interval=30,
                # large transfers (%bt_pull) move in fewer, bigger packets
                window=WINDOW_BYTES,
                max_pktsize=MAX_PACKET_BYTES,
            ),
            CONNECT_TIMEOUT_S,
        )
    except _ProxyRefused as exc:
        raise SessionRefused(f"{where} refused the connection: {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise SessionRefused(f"{where} is not the one expected ({exc.verify_message})") from None
    except asyncssh.PermissionDenied:
        raise SessionRefused(
            "the node refused the certificate (expired, or signed for another node); sign again"
        ) from None
    except (OSError, asyncssh.Error, TimeoutError, ValueError) as exc:
        raise SessionRefused(f"cannot connect through {where}: {exc}") from None
