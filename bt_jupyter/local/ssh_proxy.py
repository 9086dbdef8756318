"""Baseten's SSH proxy and a node's SSH server, on this machine (an asyncssh server).

A client connects as it does to Baseten (truss's ``proxy_command.py``): TLS to the proxy
address ``ssh/sign`` returned, the JWT length-prefixed, one status byte (0: admitted),
then SSH as user ``baseten`` with the signed certificate. Here the same connection then
plays the node's SSH server:

- the JWT must be one this service signed, unexpired, for a node of a RUNNING job;
- the certificate must be this service's, unexpired, and name that same node;
- port forwarding reaches only that node's session kernel (the ports of its connection
  file, on 127.0.0.1); commands run in the node's working directory with its home;
- when the job ends, its connections are closed.

Nothing else listens: the proxy binds 127.0.0.1 only. It runs on its own event loop in a
thread of the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bt_jupyter._asyncssh import asyncssh
from bt_jupyter.local import envs
from bt_jupyter.local.home import Home
from bt_jupyter.local.ssh_authority import SSH_USER, Admission, Refused, SshAuthority
from bt_jupyter.local.store import Store
from bt_jupyter.session_kernel import connection_file
from bt_jupyter.spec import TrainingJobStatus

OK, REFUSED = b"\x00", b"\x01"
#: A JWT longer than this is not one of ours.
MAX_JWT_BYTES = 16 * 1024
#: Seconds a connection has to send its JWT (a silent one is dropped).
GATE_TIMEOUT_S = 10.0
#: SSH flow control, as the client asks for it (remote/tunnel.py).
WINDOW_BYTES = 16 * 1024 * 1024
MAX_PACKET_BYTES = 256 * 1024
#: How often connections are checked against their job's status.
WATCH_S = 1.0

log = logging.getLogger("uvicorn.error")
Admit = Callable[[bytes], Admission]


class _Gate(asyncio.Protocol):
    """The proxy's handshake: read the JWT, answer the status byte, then hand the
    connection to the SSH server (or say why not and close)."""

    def __init__(self, admit: Admit, session_factory: Callable[[str, int], Any]) -> None:
        self.admit, self.session_factory = admit, session_factory
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(GATE_TIMEOUT_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if len(self.buffer) < 4:
            return
        (size,) = struct.unpack("!I", self.buffer[:4])
        if size > MAX_JWT_BYTES:
            self._refuse("the JWT is too long")
            return
        if len(self.buffer) < 4 + size:
            return
        token, rest = self.buffer[4 : 4 + size], self.buffer[4 + size :]
        if self.timer is not None:
            self.timer.cancel()
        try:
            admission = self.admit(token)
        except Refused as exc:
            self._refuse(str(exc))
            return
        self.transport.write(OK)
        session = self.session_factory("", 0)
        session.set_extra_info(bt_admission=admission)
        self.transport.set_protocol(session)
        session.connection_made(self.transport)
        if rest:
            session.data_received(rest)

    def _refuse(self, why: str) -> None:
        """Status byte 1, then the reason on one line (a client that reads only the
        status byte, as truss's does, just closes)."""
        assert self.transport is not None
        self.transport.write(REFUSED + why.encode()[:500] + b"\n")
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class _GateListener:
    """asyncssh's tunnel seam: it asks this for its listening server."""

    def __init__(self, tls: ssl.SSLContext, admit: Admit) -> None:
        self.tls, self.admit = tls, admit

    async def create_server(
        self, session_factory: Callable[[str, int], Any], host: str, port: int
    ) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _Gate(self.admit, session_factory), host, port, ssl=self.tls
        )

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class _NodeServer(asyncssh.SSHServer):
    """One admitted connection: logs in with a certificate for its node, forwards only to
    that node's kernel."""

    def __init__(self, proxy: SshProxy) -> None:
        self.proxy = proxy
        self.conn: asyncssh.SSHServerConnection | None = None
        self.admission: Admission | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.admission = conn.get_extra_info("bt_admission")
        self.proxy.connections[conn] = self.admission

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.proxy.connections.pop(self.conn, None)

    def begin_auth(self, username: str) -> bool:
        assert self.conn is not None
        assert self.admission is not None
        if username == SSH_USER:
            authorized = self.proxy.authority.authorized_keys(self.admission)
        else:  # no key logs in as anyone else
            authorized = asyncssh.import_authorized_keys("")
        self.conn.set_authorized_keys(authorized)
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        assert self.admission is not None
        ports = self.proxy.kernel_ports(self.admission)
        if dest_host not in ("127.0.0.1", "localhost") or dest_port not in ports:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"{dest_host}:{dest_port} is not this node's session kernel",
            )
        return True

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class SshProxy:
    def __init__(self, home: Home, authority: SshAuthority) -> None:
        self.home, self.authority = home, authority
        self.store = Store(home.db)
        self.connections: dict[asyncssh.SSHServerConnection, Admission] = {}
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ssh-proxy", daemon=True)
        self._acceptor: asyncssh.SSHAcceptor | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the SSH proxy did not start: {self._error}")

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._listen())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _listen(self) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.authority.tls_cert, self.authority.tls_key)
        self._acceptor = await asyncssh.listen(
            "127.0.0.1",
            0,
            tunnel=_GateListener(tls, self._admit),
            server_factory=lambda: _NodeServer(self),
            server_host_keys=[self.authority.host_key],
            process_factory=self._exec,
            encoding=None,
            allow_pty=False,
            x11_forwarding=False,
            agent_forwarding=False,
            login_timeout=30,
            keepalive_interval=30,
            window=WINDOW_BYTES,
            max_pktsize=MAX_PACKET_BYTES,
        )
        port = self._acceptor.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self._watch = asyncio.get_running_loop().create_task(self._end_with_jobs())

    async def _shutdown(self) -> None:
        self._watch.cancel()
        for conn in list(self.connections):
            conn.close()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()

    # ------------------------------------------------------------------ admission

    def _admit(self, token: bytes) -> Admission:
        admission = self.authority.admit(token)
        job = self.store.job(admission.job_id)
        if job is None:
            raise Refused(f"no training job {admission.job_id} on this service")
        if job.status != TrainingJobStatus.RUNNING:
            raise Refused(f"training job {job.id} is {job.status.short}: its nodes are not running")
        if admission.node >= job.node_count:
            raise Refused(f"training job {job.id} has no node {admission.node}")
        return admission

    async def _end_with_jobs(self) -> None:
        """Close the connections of jobs that ended: a node that is gone has no server."""
        while True:
            await asyncio.sleep(WATCH_S)
            for conn, admission in list(self.connections.items()):
                job = self.store.job(admission.job_id)
                if job is None or job.status.is_terminal:
                    conn.close()

    # ------------------------------------------------------------------ the node

    def node_home(self, admission: Admission) -> Path:
        return self.home.node_home(admission.job_id, admission.node)

    def kernel_ports(self, admission: Admission) -> set[int]:
        """The ports of the node's session kernel (none before it wrote its file)."""
        try:
            info = json.loads(connection_file(self.node_home(admission)).read_text())
        except (OSError, ValueError):
            return set()
        return {int(info[k]) for k in info if k.endswith("_port")}

    async def _exec(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        """A command on the node: run in its working directory, with its home; ended
        when the channel closes."""
        conn = process.channel.get_connection()
        admission = self.connections.get(conn)  # type: ignore[call-overload]
        if admission is None or not process.command:
            process.stderr.write(b"this node runs commands only (no interactive shell)\n")
            process.exit(1)
            return
        home = self.node_home(admission)
        env = {
            "HOME": str(home),
            "PATH": envs.IMAGE_PATH,
            "LANG": "C.UTF-8",
            "BT_TRAINING_JOB_ID": admission.job_id,
            "BT_NODE_RANK": str(admission.node),
        }
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            process.command,
            cwd=self.home.node_work(admission.job_id, admission.node),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
        assert stdin is not None
        assert stdout is not None
        assert stderr is not None

        async def feed() -> None:
            while chunk := await process.stdin.read(65536):
                stdin.write(chunk)
                await stdin.drain()
            stdin.close()

        async def pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()

        feeder = asyncio.create_task(feed())
        try:
            # all the output first, then the exit status (else the status can overtake it)
            await asyncio.gather(pump(stdout, process.stdout), pump(stderr, process.stderr))
            process.exit(await proc.wait())
        except (OSError, asyncssh.Error):
            pass  # the client went away
        finally:
            feeder.cancel()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
