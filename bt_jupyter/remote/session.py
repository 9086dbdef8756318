"""A live session: a job whose nodes each serve an IPython kernel, and the notebook's
connections to them. The same code runs against the local service and Baseten: sign
(``ssh/sign``), connect through the SSH proxy (:mod:`.tunnel`), read the node's kernel
connection file there, forward its ports, talk Jupyter's protocol (:mod:`.kernel`).

The kernels live in the job, not in the notebook: a notebook kernel restart loses only
these connections, and ``attach`` makes them again with the remote variables intact.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bt_jupyter import spec
from bt_jupyter.errors import SessionEnded, SessionError
from bt_jupyter.packaging.bundle import Bundle, PackageOptions, package_cell, runs_bundle
from bt_jupyter.packaging.capture import Capture
from bt_jupyter.remote import keys
from bt_jupyter.remote.kernel import Ask, CellResult, RemoteKernel, run_cells
from bt_jupyter.remote.tunnel import NodeTunnel, TunnelClosed
from bt_jupyter.session_kernel import CONNECTION_FILE, SESSION_DIR

if TYPE_CHECKING:
    from bt_jupyter.jobs import Client, Job

S = spec.TrainingJobStatus
#: How long a node may take from RUNNING to a kernel that answers: its start commands
#: install the requirements first (on Baseten, minutes for a big image).
KERNEL_START_TIMEOUT_S = 20 * 60
POLL_S = 0.5
#: ``ssh``: reach a local node's kernel through SSH too (what Baseten needs).
TRANSPORT_ENV = "BT_JUPYTER_SESSION_TRANSPORT"
#: Times a connection that drops while it is being made is made again.
RECONNECTS = 3
#: The kernel's ports in its connection file.
PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: A node's kernel connection file, as the node's shell names it.
REMOTE_CONNECTION_FILE = f"~/{SESSION_DIR.as_posix()}/{CONNECTION_FILE}"

Progress = Callable[[str], None]


@dataclass
class _Node:
    tunnel: NodeTunnel
    kernel: RemoteKernel
    lock: threading.Lock


@dataclass(frozen=True)
class NodeOutput:
    """One output message of a remote cell, and the node it came from."""

    node: int
    content: dict[str, Any]


class LiveSession:
    def __init__(self, job: Job, idle_timeout_s: float = 0.0, post_mortem: bool = False) -> None:
        self.job = job
        self._nodes: dict[int, _Node] = {}
        self._lock = threading.Lock()
        #: The session's idle clock, as this notebook sees it (the node's kernel keeps
        #: the real one: :meth:`status`): seconds, and since when it has been idle.
        self.idle_timeout_s = idle_timeout_s
        self.idle_since = 0.0
        self.busy = False
        self.post_mortem = post_mortem
        #: Called with this session when a cell starts or ends here (the widget's clock).
        self.on_activity: list[Callable[[LiveSession], None]] = []

    def clock(self) -> dict[str, Any]:
        """The idle clock for a view: timeout, idle since (epoch s), busy, nodes."""
        return {
            "idle_timeout_s": self.idle_timeout_s,
            "idle_since": self.idle_since,
            "busy": self.busy,
            "nodes": self.node_count,
            "post_mortem": self.post_mortem,
        }

    def _activity(self, busy: bool) -> None:
        self.busy = busy
        if not busy:
            self.idle_since = time.time()
        for callback in list(self.on_activity):
            callback(self)

    def __repr__(self) -> str:
        return f"<LiveSession {self.job.id} {self.job.status.short}, {self.job.node_count} node(s)>"

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def node_count(self) -> int:
        return self.job.node_count

    # ------------------------------------------------------------------ connect

    def check_node(self, node: int) -> None:
        if not 0 <= node < self.node_count:
            raise SessionError(
                f"--node {node}: session {self.id} has {self.node_count} node(s), "
                f"numbered 0 to {self.node_count - 1}"
            )

    def kernel(self, node: int, progress: Progress | None = None) -> _Node:
        """The node's connection, made (and waited for) on first use or after it broke."""
        self.check_node(node)
        with self._lock:
            found = self._nodes.get(node)
            if found is not None and found.tunnel.is_open and found.kernel.client.is_alive():
                return found
            if found is not None:
                self._drop(node)
            made = self._connect(node, progress or (lambda _: None))
            self._nodes[node] = made
            return made

    def _connect(self, node: int, progress: Progress) -> _Node:
        """Sign, connect, wait for the node's kernel, forward its ports. A connection
        that drops on the way is made again (a few times), as long as the job runs."""
        for attempt in range(RECONNECTS + 1):
            self._wait_running(progress)
            key = keys.ensure_key()
            signed = self.job.sign_ssh(keys.public_line(key), node)
            tunnel = NodeTunnel.open(signed, key, self.job.client.backend.ssh_proxy_tls(), node)
            try:
                info = self._connection_info(tunnel, node, progress)
                if self._direct():
                    ports = {name: int(info[name]) for name in PORTS}
                else:
                    ports = {name: tunnel.forward(int(info[name])) for name in PORTS}
                kernel = RemoteKernel(node, {**info, **ports, "ip": "127.0.0.1"})
            except TunnelClosed:
                tunnel.close()
                if attempt == RECONNECTS or self.job.refresh().status.is_terminal:
                    raise
                continue
            except BaseException:
                tunnel.close()
                raise
            self._read_clock(kernel)
            return _Node(tunnel, kernel, threading.Lock())
        raise AssertionError("not reached")

    def _read_clock(self, kernel: RemoteKernel) -> None:
        """The node's idle clock, when this notebook has not seen a cell run yet."""
        if self.idle_since:
            return
        answer = kernel.status()
        if answer.get("ok"):
            self.idle_timeout_s = float(answer["idle_timeout"])
            self.idle_since = time.time() - float(answer["idle_for"])
            for callback in list(self.on_activity):
                callback(self)

    def _direct(self) -> bool:
        """Whether the kernel's ports are used as they are, not forwarded through SSH:
        the local service's nodes listen on this machine's loopback (an optimisation the
        backend allows; the kernel's key still comes only over SSH). The environment
        variable :data:`TRANSPORT_ENV` set to ``ssh`` forwards them as on Baseten."""
        if os.environ.get(TRANSPORT_ENV, "").lower() == "ssh":
            return False
        return self.job.client.backend.kernels_on_this_machine

    def _wait_running(self, progress: Progress) -> None:
        said = None
        while True:
            status = self.job.refresh().status
            if status == S.RUNNING:
                return
            if status.is_terminal:
                raise self._ended()
            if status != said:
                progress(f"session {self.id}: {status.short}, waiting for it to run")
                said = status
            time.sleep(POLL_S)

    def _connection_info(self, tunnel: NodeTunnel, node: int, progress: Progress) -> dict[str, Any]:
        """The node's kernel connection file, read over SSH once the kernel wrote it."""
        deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
        said = False
        while time.monotonic() < deadline:
            done = tunnel.run(f"cat {REMOTE_CONNECTION_FILE} 2>/dev/null")
            if done.exit_status == 0 and done.stdout:
                try:
                    info = json.loads(str(done.stdout))
                except ValueError:
                    info = None  # being written
                if isinstance(info, dict) and all(p in info for p in PORTS):
                    return info
            if self.job.refresh().status.is_terminal:
                raise self._ended()
            if not said:
                progress(f"session {self.id}: node {node} is starting its kernel")
                said = True
            time.sleep(POLL_S)
        raise SessionError(
            f"node {node} of session {self.id} started no kernel in "
            f"{KERNEL_START_TIMEOUT_S // 60} min; see its log (%bt_logs {self.id})"
        )

    def _ended(self) -> SessionEnded:
        job = self.job.refresh()
        why = f": {job.error_message}" if job.error_message else ""
        return SessionEnded(
            f"session {self.id} has ended ({job.status.short}{why}); start a new one with "
            "%bt_session start"
        )

    def _drop(self, node: int) -> None:
        found = self._nodes.pop(node, None)
        if found is not None:
            found.kernel.close()
            found.tunnel.close()

    def close(self) -> None:
        """Close this notebook's connections (the session's job keeps running)."""
        with self._lock:
            for node in list(self._nodes):
                self._drop(node)

    def stop(self) -> None:
        """Stop the session's job: its kernels and their variables end."""
        self.close()
        self.job.stop()

    # ------------------------------------------------------------------ use

    def _use(self, node: int, progress: Progress | None, work: Callable[[_Node], Any]) -> Any:
        """Run ``work`` on the node's connection; a broken one is made again once (and a
        job that ended says so)."""
        for attempt in (0, 1):
            connected = self.kernel(node, progress)
            try:
                with connected.lock:
                    return work(connected)
            except SessionEnded:
                self._broken([node])
                if attempt:
                    raise
        raise AssertionError("not reached")

    def _broken(self, nodes: list[int]) -> None:
        """A connection broke: say so if the job ended, else drop the nodes' connections
        (the next use makes them again)."""
        if self.job.refresh().status.is_terminal:
            raise self._ended() from None
        with self._lock:
            for node in nodes:
                self._drop(node)

    def run(
        self,
        code: str,
        nodes: list[int],
        show: Callable[[NodeOutput], None],
        ask: Ask | None = None,
        progress: Progress | None = None,
    ) -> dict[int, CellResult]:
        """Run ``code`` on ``nodes`` at once; outputs reach ``show`` as they come. Ctrl-C
        (the notebook's stop button) interrupts the remote cells, not the session."""
        for node in nodes:
            self.check_node(node)
        connected = {node: self.kernel(node, progress) for node in nodes}
        for node in nodes:
            connected[node].lock.acquire()
        self._activity(busy=True)
        try:
            return self._run(code, connected, show, ask if len(nodes) == 1 else None)
        except SessionEnded:
            self._broken(nodes)  # a cell is not run twice: the error stands
            raise
        finally:
            for node in nodes:
                connected[node].lock.release()
            self._activity(busy=False)

    @staticmethod
    def _run(
        code: str,
        connected: dict[int, _Node],
        show: Callable[[NodeOutput], None],
        ask: Ask | None,
    ) -> dict[int, CellResult]:
        cells = {node: c.kernel.start(code, ask) for node, c in connected.items()}
        run_cells(cells, lambda node, output: show(NodeOutput(node, output)))
        return {node: cell.result() for node, cell in cells.items()}

    def push(self, captured: Capture, nodes: list[int]) -> list[str]:
        names: list[str] = []
        for node in nodes:
            names = self._use(node, None, lambda c: c.kernel.push(captured))
        return names

    def pull(self, names: list[str], node: int, max_bytes: int) -> dict[str, Any]:
        values: dict[str, Any] = self._use(node, None, lambda c: c.kernel.pull(names, max_bytes))
        return values

    def status(self, node: int = 0) -> dict[str, Any]:
        """The node's idle time and timeout (for the widget's countdown)."""
        answer: dict[str, Any] = self._use(node, None, lambda c: c.kernel.status())
        return answer


def start(
    client: Client,
    project: spec.TrainingProject,
    options: PackageOptions,
    team: str | None = None,
) -> LiveSession:
    """Submit a session job: ``project.job``'s compute and runtime, serving a kernel per
    node (``options.session``) with ``options``' requirements installed."""
    assert options.session is not None
    planned, bundle = plan(project, options)
    job = client.submit(planned, bundle, team=team)
    return LiveSession(job, options.session.idle_timeout_s)


def plan(
    project: spec.TrainingProject, options: PackageOptions
) -> tuple[spec.TrainingProject, Bundle]:
    """The session job as it would be submitted (``--dry-run`` shows it)."""
    bundle = package_cell("", {}, options)
    return runs_bundle(project, bundle), bundle


def attach(client: Client, job_id: str, post_mortem: bool = False) -> LiveSession:
    """The session of job ``job_id`` (after a kernel restart, from another notebook);
    ``post_mortem``: the kept process of a job that failed with ``--interactive
    on_failure``."""
    job = client.job(job_id)
    manifest = job.bundle_manifest() or {}
    if post_mortem and "post_mortem" not in manifest:
        raise SessionError(
            f"job {job.id} keeps no failed process: submit it with "
            "%%bt_train --interactive on_failure to debug its failure"
        )
    if not post_mortem and "session" not in manifest:
        raise SessionError(
            f"job {job.id} is not a live session (it runs a cell); start one with %bt_session start"
        )
    if job.status.is_terminal:
        raise LiveSession(job)._ended()
    kept = manifest.get("post_mortem" if post_mortem else "session") or {}
    return LiveSession(job, float(kept.get("idle_timeout_s") or 0), post_mortem)
