"""``%bt_session start|attach|stop|list|status``, ``%%bt_remote``, ``%bt_push`` and
``%bt_pull``: parsing and showing; the sessions themselves are bt_jupyter.remote.

Owned by :class:`bt_jupyter.magics.BtMagics` (which registers the magics), so they share
its clients, project and ``%%bt_train`` options.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from typing import Any, Protocol

from IPython.core.error import UsageError
from IPython.display import clear_output, display, publish_display_data

from bt_jupyter import limits, remote, spec
from bt_jupyter.errors import BtJupyterError, NoLiveSession, RemoteCellError
from bt_jupyter.jobs import Client
from bt_jupyter.magic_args import Parser, parse_line, train_parser
from bt_jupyter.packaging import PackageOptions, describe
from bt_jupyter.packaging.bundle import SessionMode
from bt_jupyter.packaging.capture import capture
from bt_jupyter.remote import LiveSession, NodeOutput
from bt_jupyter.remote.kernel import CellResult
from bt_jupyter.session_kernel import DEFAULT_IDLE_TIMEOUT_S
from bt_jupyter.sessions import duration


class MagicsHost(Protocol):
    """What of BtMagics the session magics use."""

    default_project: str
    max_value_mb: float

    @property
    def _ns(self) -> dict[str, Any]: ...

    def client(self, backend: str | None = None) -> Client: ...

    def _project(self, args: argparse.Namespace, name: str) -> spec.TrainingProject: ...


#: ``%%bt_train`` options that mean nothing for a session.
NOT_FOR_SESSIONS = {
    "sweep": "--sweep",
    "out": "--out",
    "launcher": "--launcher",
    "nproc_per_node": "--nproc-per-node",
    "wait": "--wait",
    "interactive": "--interactive",
}
NO_SESSION = (
    "no live session: start one with %bt_session start (or, after a kernel restart, "
    "%bt_session attach JOB_ID)"
)
#: The longest ``--timeout``: a week.
MAX_TIMEOUT_S = limits.MAX_SESSION_MINUTES * 60


def parse_timeout(text: str) -> float:
    """``45m``, ``2h``, ``90s`` or minutes (``30``): seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 45m, 2h or 90s, got {limits.shown(text)}"
        )
    seconds = float(found[1]) * {"s": 1, "m": 60, "h": 3600, "": 60}[found[2]]
    if not 1 <= seconds <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"{text.strip()}: a session's idle timeout is from 1s to {MAX_TIMEOUT_S // 3600}h"
        )
    return seconds


class SessionMagics:
    def __init__(self, magics: MagicsHost) -> None:
        self.magics = magics
        self.sessions: dict[str, LiveSession] = {}
        self.current: LiveSession | None = None

    # ------------------------------------------------------------------ %bt_session

    def session(self, words: list[str], line: str) -> None:
        command, rest = words[0], line.strip()[len(words[0]) :]
        handlers: dict[str, Callable[[str], None]] = {
            "start": self.start,
            "attach": self.attach,
            "stop": self.stop,
            "list": self.list_sessions,
            "status": self.status,
        }
        try:
            handlers[command](rest)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None

    def start(self, line: str) -> None:
        parser = train_parser()
        parser.prog = "%bt_session start"
        parser.add_argument("--timeout", type=parse_timeout, default=DEFAULT_IDLE_TIMEOUT_S)
        parser.add_argument("--init-distributed", action="store_true")
        args = parse_line(parser, line)
        for dest, flag in NOT_FOR_SESSIONS.items():
            if getattr(args, dest) not in (None, False, "", []):
                raise UsageError(f"%bt_session start: {flag} is for %%bt_train, not a session")
        project = self.magics._project(args, args.project or self.magics.default_project)
        options = PackageOptions(
            pip=tuple(args.pip),
            requirements_file=args.requirements,
            include=tuple(args.include),
            base_image=args.base_image,
            image_python=args.image_python,
            gpu=bool(args.gpu),
            max_value_bytes=self.max_value_bytes,
            session=SessionMode(args.timeout, args.init_distributed),
        )
        if args.dry_run:
            planned, bundle = remote.plan(project, options)
            wire = {"training_project": planned.to_wire(), "training_job": planned.job.to_wire()}
            print(json.dumps(wire, indent=2))
            print("\n".join(describe(bundle)))
            print("dry run: nothing was submitted")
            return
        client = self.magics.client(args.backend)
        live = remote.start(client, project, options, team=args.team)
        self._keep(live)
        if args.bind:
            self.magics._ns[args.bind] = live
        print(
            f"Session {live.id} started ({live.node_count} node(s), stops after "
            f"{duration(args.timeout)} without a cell); run cells in it with %%bt_remote"
        )
        display(live)  # type: ignore[no-untyped-call]

    def attach(self, line: str) -> None:
        job_id = line.strip()
        if not job_id:
            raise UsageError("usage: %bt_session attach JOB_ID (see %bt_session list)")
        live = remote.attach(self.magics.client(), job_id)
        self._keep(live)
        print(f"Attached to session {live.id} ({live.job.status.short}, {live.node_count} node(s))")
        display(live)  # type: ignore[no-untyped-call]

    def stop(self, line: str) -> None:
        live = self._session(line.strip() or None)
        live.stop()
        if self.current is live:
            self.current = None
        self.sessions.pop(live.id, None)
        print(f"Session {live.id} stopped")

    def list_sessions(self, line: str) -> None:
        client = self.magics.client()
        project = line.strip() or self.magics.default_project
        running = [
            job
            for job in client.jobs(project=project)
            if not job.status.is_terminal and "session" in (job.bundle_manifest() or {})
        ]
        if not running:
            print(f"No live sessions in project {project!r} (%bt_session start)")
            return
        for job in running:
            mark = "*" if self.current is not None and self.current.id == job.id else " "
            print(
                f"{mark} {job.id}  {job.status.short:<10} {job.node_count} node(s)  {job.compute}"
            )

    def status(self, line: str) -> None:
        live = self._session(line.strip() or None)
        answer = live.status()
        left = max(0.0, answer["idle_timeout"] - answer["idle_for"])
        print(
            f"Session {live.id}: {live.job.refresh().status.short}, {live.node_count} node(s); "
            f"idle {duration(answer['idle_for'])}, stops after "
            f"{duration(answer['idle_timeout'])} without a cell ({duration(left)} left)"
        )

    def _keep(self, live: LiveSession) -> None:
        old = self.sessions.get(live.id)
        if old is not None:
            old.close()
        self.sessions[live.id] = self.current = live

    def _session(self, job_id: str | None) -> LiveSession:
        if job_id is None:
            if self.current is None:
                raise NoLiveSession(NO_SESSION)
            return self.current
        if job_id not in self.sessions:
            self._keep(remote.attach(self.magics.client(), job_id))
        return self.sessions[job_id]

    @property
    def max_value_bytes(self) -> int:
        return int(self.magics.max_value_mb * 1_000_000)

    # ------------------------------------------------------------------ %%bt_remote

    def remote(self, line: str, cell: str) -> None:
        parser = Parser(prog="%%bt_remote", add_help=False)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--node", type=int)
        where.add_argument("--all", action="store_true")
        parser.add_argument("-o", dest="bind", metavar="VAR")
        parser.add_argument("--session", metavar="JOB_ID")
        args = parse_line(parser, line)
        try:
            live = self._session(args.session)
            nodes = list(range(live.node_count)) if args.all else [args.node or 0]
            # the magic's line stands as the cell's line 1 (IPython drops leading blank
            # lines, not comments): remote line numbers are the notebook's
            code = "# %%bt_remote\n" + cell
            results = live.run(code, nodes, self._shower(args.all), _ask, _progress)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        failed = {n: r for n, r in results.items() if r.status != "ok"}
        if failed:
            raise _remote_error(failed, self.magics._ns, several=args.all)
        if args.bind:
            self._bind(live, [args.bind], nodes[0])

    def _shower(self, several: bool) -> Callable[[NodeOutput], None]:
        def show(output: NodeOutput) -> None:
            content = output.content
            kind = content["msg_type"]
            if kind == "stream":
                text = str(content.get("text", ""))
                if several:
                    text = "".join(f"[node {output.node}] {t}" for t in text.splitlines(True))
                stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
                stream.write(text)
                stream.flush()
            elif kind in ("display_data", "execute_result", "update_display_data"):
                publish_display_data(  # type: ignore[no-untyped-call]
                    content.get("data") or {},
                    content.get("metadata") or {},
                    transient=content.get("transient"),
                    update=kind == "update_display_data",
                )
            elif kind == "clear_output":
                clear_output(wait=bool(content.get("wait")))  # type: ignore[no-untyped-call]

        return show

    # ------------------------------------------------------------------ %bt_debug

    def debug(self, line: str) -> None:
        parser = Parser(prog="%bt_debug", add_help=False)
        parser.add_argument("job_id", metavar="JOB_ID")
        parser.add_argument("--node", type=int, default=0)
        args = parse_line(parser, line)
        try:
            live = remote.attach(self.magics.client(), args.job_id, post_mortem=True)
            live.check_node(args.node)
            self._keep(live)
            show = self._shower(False)
            results = live.run(FAILURE_SUMMARY, [args.node], show, None, _progress)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        if results[args.node].status != "ok":
            raise _remote_error(results, self.magics._ns, several=False)
        print(
            f"%%bt_remote cells now run in job {live.id}'s failed process, with these "
            "locals; %debug there opens pdb at the failure; %bt_session stop ends it"
        )

    # ------------------------------------------------------------------ push / pull

    def push(self, line: str) -> None:
        parser = Parser(prog="%bt_push", add_help=False)
        parser.add_argument("names", nargs="+", metavar="VAR")
        parser.add_argument("--node", type=int)
        parser.add_argument("--session", metavar="JOB_ID")
        args = parse_line(parser, line)
        namespace = self.magics._ns
        missing = [n for n in args.names if n not in namespace]
        if missing:
            raise UsageError(f"%bt_push: {', '.join(missing)} is not defined in this notebook")
        try:
            live = self._session(args.session)
            nodes = list(range(live.node_count)) if args.node is None else [args.node]
            for node in nodes:
                live.check_node(node)
            captured = capture(
                "; ".join(args.names), namespace, max_value_bytes=self.max_value_bytes
            )
            names = live.push(captured, nodes)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        where = f"node {nodes[0]}" if len(nodes) == 1 else f"all {len(nodes)} nodes"
        print(f"Pushed {', '.join(names)} to {where} of session {live.id}")

    def pull(self, line: str) -> None:
        parser = Parser(prog="%bt_pull", add_help=False)
        parser.add_argument("names", nargs="+", metavar="VAR")
        parser.add_argument("--node", type=int, default=0)
        parser.add_argument("--session", metavar="JOB_ID")
        args = parse_line(parser, line)
        try:
            self._bind(self._session(args.session), args.names, args.node)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None

    def _bind(self, live: LiveSession, names: list[str], node: int) -> None:
        for name in names:
            if not name.isidentifier():
                raise UsageError(f"{limits.shown(name)} is not a variable name")
        values = live.pull(names, node, self.max_value_bytes)
        self.magics._ns.update(values)


#: Run in a kept failed process by ``%bt_debug``: the error, where, and the frame's locals.
FAILURE_SUMMARY = """
import reprlib as _r, sys as _s
_tb = _s.last_traceback
while _tb.tb_next is not None:
    _tb = _tb.tb_next
_c = _tb.tb_frame.f_code
print(f"{_s.last_type.__name__}: {_s.last_value}")
print(f"in {_c.co_name}, {_c.co_filename} line {_tb.tb_lineno}; its locals:")
for _k, _v in _tb.tb_frame.f_locals.items():
    print(f"  {_k} = {_r.repr(_v)}")
del _r, _s, _tb, _c, _k, _v
"""


def _ask(prompt: str, password: bool) -> str:
    """A remote ``input()`` (``%debug``'s prompt too), asked in this notebook."""
    return getpass.getpass(prompt) if password else input(prompt)


def _progress(text: str) -> None:
    print(text, flush=True)


def _remote_error(
    failed: dict[int, CellResult], namespace: dict[str, Any], several: bool
) -> RemoteCellError:
    lines: list[str] = []
    for node, result in sorted(failed.items()):
        if several:
            lines.append(f"\x1b[1m[node {node}]\x1b[0m")
        lines += result.traceback or [f"{result.ename}: {result.evalue}"]
        name = re.fullmatch(r"name '(\w+)' is not defined", result.evalue)
        if result.ename == "NameError" and name and name[1] in namespace:
            lines.append(
                f"{name[1]} is defined in this notebook, not in the session: "
                f"%bt_push {name[1]} sends it"
            )
    first = failed[min(failed)]
    return RemoteCellError(f"{first.ename}: {first.evalue}", lines)
