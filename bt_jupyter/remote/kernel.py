"""A node's session kernel, seen from the notebook: a jupyter_client client on the
forwarded ports, which runs cells (outputs streamed to a callback, stdin answered, an
interrupt passed on) and moves values over the session's transfer comm."""

from __future__ import annotations

import pickle
import queue
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client.blocking.client import BlockingKernelClient

from bt_jupyter.errors import SessionEnded, TransferError
from bt_jupyter.packaging.capture import Capture
from bt_jupyter.session_kernel import TRANSFER_TARGET

#: Seconds the kernel has to answer its first message once the ports are forwarded.
READY_TIMEOUT_S = 30.0
#: Seconds an interrupted cell has to end before the wait gives up on it.
INTERRUPT_GRACE_S = 10.0
#: Message types a cell's outputs come as.
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}
)

Output = Callable[[dict[str, Any]], None]
Ask = Callable[[str, bool], str]


@dataclass
class CellResult:
    """How a remote cell ended: ``status`` ok | error | aborted, and its error."""

    status: str
    execution_count: int | None = None
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)
    interrupted: bool = False


class RemoteKernel:
    def __init__(self, node: int, connection: dict[str, Any]) -> None:
        self.node = node
        self.client = BlockingKernelClient()
        self.client.load_connection_info(connection)  # type: ignore[arg-type]
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=READY_TIMEOUT_S)
        except RuntimeError as exc:
            self.client.stop_channels()
            raise SessionEnded(f"node {node}'s session kernel does not answer: {exc}") from None
        self._comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": self._comm_id, "target_name": TRANSFER_TARGET})

    def close(self) -> None:
        self.client.stop_channels()

    # ------------------------------------------------------------------ cells

    def start(self, code: str, ask: Ask | None = None) -> RunningCell:
        """Send ``code`` to run; the returned cell is stepped until it is done."""
        return RunningCell(self, code, ask)

    def interrupt(self) -> None:
        """Interrupt the cell running on the node (the session lives on)."""
        msg = self.client.session.msg("interrupt_request", {})
        self.client.control_channel.send(msg)

    # ------------------------------------------------------------------ transfers

    def _send(
        self, msg_type: str, content: dict[str, Any], buffers: list[Any] | None = None
    ) -> str:
        msg = self.client.session.send(
            self.client.shell_channel.socket, msg_type, content, buffers=buffers
        )
        assert msg is not None
        return str(msg["header"]["msg_id"])

    def request(
        self, op: str, buffers: list[Any] | None = None, timeout: float = 600.0, **data: Any
    ) -> tuple[dict[str, Any], list[memoryview]]:
        """One transfer request; its answer and the buffers that came with it."""
        msg_id = self._send(
            "comm_msg",
            {"comm_id": self._comm_id, "data": {"op": op, **data}},
            buffers=buffers or [],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self.client.is_alive():
                    raise SessionEnded(f"node {self.node}'s session kernel stopped") from None
                continue
            if msg["msg_type"] == "comm_msg" and msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]["data"], list(msg.get("buffers") or [])
        raise TransferError(f"node {self.node} did not answer {op} within {timeout:g} s")

    def status(self) -> dict[str, Any]:
        return self.request("status", timeout=30)[0]

    def push(self, captured: Capture) -> list[str]:
        """Put captured notebook values into the node's namespace: their imports run
        there, then the pickled values load."""
        answer, _ = self.request(
            "push", [captured.payload, *captured.buffers], imports=captured.imports
        )
        if not answer.get("ok"):
            error = str(answer.get("error"))
            missing = re.search(r"No module named '([\w.]+)'", error)
            hint = ""
            if missing:
                top = missing[1].split(".")[0]
                hint = f"; the session needs it: start one with --pip {top}"
            raise TransferError(f"node {self.node} could not take the values: {error}{hint}")
        return list(answer.get("names") or [])

    def pull(self, names: list[str], max_bytes: int) -> dict[str, Any]:
        answer, buffers = self.request("pull", names=names, max_bytes=max_bytes)
        if answer.get("missing"):
            missing = ", ".join(answer["missing"])
            raise TransferError(f"node {self.node} has no variable {missing}")
        if answer.get("too_big"):
            raise TransferError(
                f"{', '.join(names)} is {answer['too_big'] / 1e6:,.1f} MB pickled; the limit "
                f"is {answer['limit'] / 1e6:,.0f} MB (raise it with "
                "%config BtMagics.max_value_mb, or save it to a checkpoint and download it)"
            )
        if not answer.get("ok"):
            raise TransferError(f"node {self.node} could not send {', '.join(names)}: "
                                f"{answer.get('error')}")  # fmt: skip
        try:
            values = pickle.loads(buffers[0], buffers=buffers[1:])
        except ModuleNotFoundError as exc:
            raise TransferError(
                f"{', '.join(names)} needs the module {exc.name!r}, which this notebook's "
                f"Python does not have; install it here, or pull a plainer value"
            ) from None
        except Exception as exc:
            raise TransferError(
                f"{', '.join(names)} cannot be rebuilt here: {type(exc).__name__}: {exc}"
            ) from None
        assert isinstance(values, dict)
        return values


class RunningCell:
    """A cell running on one node. Its sockets are watched with every other running
    cell's in one poll (:func:`run_cells`): no thread per node, no waiting on one socket
    while another has the message."""

    def __init__(self, kernel: RemoteKernel, code: str, ask: Ask | None) -> None:
        self.kernel, self.ask = kernel, ask
        client = kernel.client
        self.msg_id = client.execute(code, allow_stdin=ask is not None)
        self.reply: dict[str, Any] | None = None
        self.idle = False
        #: The kernel began running it (``execute_input``): before that, an interrupt
        #: finds the kernel between cells, where it ignores SIGINT.
        self.started = False
        self.interrupted_at: float | None = None
        self._interrupt_pending = False
        self.sockets = [client.shell_channel.socket, client.iopub_channel.socket]
        if ask is not None:
            self.sockets.append(client.stdin_channel.socket)

    @property
    def done(self) -> bool:
        return (self.reply is not None and self.idle) or self._gave_up

    @property
    def _gave_up(self) -> bool:
        return (
            self.interrupted_at is not None
            and time.monotonic() - self.interrupted_at > INTERRUPT_GRACE_S
        )

    def interrupt(self) -> None:
        """Interrupt the cell, now if it runs, else once it starts (an interrupt sent
        while the cell waits its turn is lost, and the cell would then run unstopped)."""
        if self.interrupted_at is None:
            self.kernel.interrupt()
            self.interrupted_at = time.monotonic()
            self._interrupt_pending = not self.started

    def take(self, on_output: Output) -> None:
        """Every message that has arrived for this cell: outputs go to ``on_output``
        (with their ``msg_type``), input requests are asked."""
        client = self.kernel.client
        while self.ask is not None and client.stdin_channel.msg_ready():
            request = client.get_stdin_msg(timeout=0)
            if request["msg_type"] == "input_request":
                content = request["content"]
                client.input(self.ask(content.get("prompt", ""), bool(content.get("password"))))
        while client.shell_channel.msg_ready():
            msg = client.get_shell_msg(timeout=0)
            if msg["parent_header"].get("msg_id") == self.msg_id:
                self.reply = msg["content"]
        while client.iopub_channel.msg_ready():
            msg = client.get_iopub_msg(timeout=0)
            if msg["parent_header"].get("msg_id") != self.msg_id:
                continue
            if msg["msg_type"] == "status":
                self.idle = msg["content"].get("execution_state") == "idle"
            elif msg["msg_type"] == "execute_input":
                self.started = True
                if self._interrupt_pending:
                    self._interrupt_pending = False
                    self.kernel.interrupt()
                    self.interrupted_at = time.monotonic()  # the grace starts now
            elif msg["msg_type"] in OUTPUT_TYPES:
                on_output({"msg_type": msg["msg_type"], **msg["content"]})

    def check_alive(self) -> None:
        if not self.kernel.client.is_alive():
            raise SessionEnded(f"node {self.kernel.node}'s session kernel stopped answering")

    def result(self) -> CellResult:
        reply = self.reply
        if reply is None:  # gave up waiting after the interrupt
            why = "the remote cell did not stop after an interrupt"
            return CellResult("error", ename="KeyboardInterrupt", evalue=why, interrupted=True)
        return CellResult(
            status=str(reply.get("status", "error")),
            execution_count=reply.get("execution_count"),
            ename=str(reply.get("ename", "")),
            evalue=str(reply.get("evalue", "")),
            traceback=list(reply.get("traceback") or []),
            interrupted=self.interrupted_at is not None,
        )


#: How often (s) a waiting cell's kernel is checked for life.
ALIVE_CHECK_S = 1.0


def run_cells(cells: dict[int, RunningCell], show: Callable[[int, dict[str, Any]], None]) -> None:
    """Wait for every cell to end, showing outputs as they come (``show(node, output)``).
    Ctrl-C interrupts them all (on their nodes) and keeps waiting for their ends."""
    poller = zmq.Poller()
    for cell in cells.values():
        for sock in cell.sockets:
            poller.register(sock, zmq.POLLIN)
    checked = time.monotonic()
    while not all(cell.done for cell in cells.values()):
        try:
            poller.poll(timeout=200)
            for node, cell in cells.items():
                if not cell.done:
                    cell.take(lambda o, n=node: show(n, o))  # type: ignore[misc]
            if time.monotonic() - checked > ALIVE_CHECK_S:
                checked = time.monotonic()
                for cell in cells.values():
                    if not cell.done:
                        cell.check_alive()
        except KeyboardInterrupt:
            for cell in cells.values():
                cell.interrupt()
