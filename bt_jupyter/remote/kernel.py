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

    def execute(
        self,
        code: str,
        on_output: Output,
        ask: Ask | None = None,
        interrupted: Callable[[], bool] = lambda: False,
        silent: bool = False,
    ) -> CellResult:
        """Run ``code``; each output message's content goes to ``on_output`` (with its
        ``msg_type``) as it arrives. ``interrupted()`` true (checked between messages)
        sends an interrupt once; ``KeyboardInterrupt`` here does the same."""
        msg_id = self.client.execute(code, silent=silent, allow_stdin=ask is not None)
        sent_interrupt: float | None = None
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            try:
                if sent_interrupt is None and interrupted():
                    raise KeyboardInterrupt
                if sent_interrupt and time.monotonic() - sent_interrupt > INTERRUPT_GRACE_S:
                    why = "the remote cell did not stop after an interrupt"
                    return CellResult(
                        "error", ename="KeyboardInterrupt", evalue=why, interrupted=True
                    )
                got = self._next(msg_id, ask)
            except KeyboardInterrupt:
                if sent_interrupt is None:
                    self.interrupt()
                    sent_interrupt = time.monotonic()
                continue
            if got is None:
                continue
            channel, msg = got
            if channel == "shell":
                reply = msg["content"]
            elif msg["msg_type"] == "status":
                idle = msg["content"].get("execution_state") == "idle"
            elif msg["msg_type"] in OUTPUT_TYPES:
                on_output({"msg_type": msg["msg_type"], **msg["content"]})
        return CellResult(
            status=str(reply.get("status", "error")),
            execution_count=reply.get("execution_count"),
            ename=str(reply.get("ename", "")),
            evalue=str(reply.get("evalue", "")),
            traceback=list(reply.get("traceback") or []),
            interrupted=sent_interrupt is not None,
        )

    def _next(self, msg_id: str, ask: Ask | None) -> tuple[str, dict[str, Any]] | None:
        """The next message of this execution (iopub, shell reply), answering input
        requests on the way; None when nothing came for a moment."""
        client = self.client
        if ask is not None and client.stdin_channel.msg_ready():
            request = client.get_stdin_msg(timeout=0)
            if request["msg_type"] == "input_request":
                content = request["content"]
                client.input(ask(content.get("prompt", ""), bool(content.get("password"))))
        if client.shell_channel.msg_ready():
            msg = client.get_shell_msg(timeout=0)
            if msg["parent_header"].get("msg_id") == msg_id:
                return "shell", msg
        if not client.is_alive():
            raise SessionEnded(f"node {self.node}'s session kernel stopped answering")
        try:
            msg = client.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            return None
        if msg["parent_header"].get("msg_id") != msg_id:
            return None
        return "iopub", msg

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
