"""The option parsing every magic shares: one ``UsageError`` line for a mistake, bounded
integers, and ``%%bt_train``'s options (``%bt_session start`` takes them too)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from IPython.core.error import UsageError

from bt_jupyter import limits, spec, sweeps
from bt_jupyter.packaging.capture import shown_value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog}?)")


def bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (limits.py), else one clear line."""

    def parse(raw: str) -> int:
        text = raw.strip()
        if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit()) or len(text) > 30:
            raise argparse.ArgumentTypeError(f"expected an integer, got {limits.shown(raw)}")
        try:
            return limits.check_int(int(text), low, high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "integer"  # what argparse calls the type in its messages
    return parse


def train_parser() -> Parser:
    p = Parser(prog="%%bt_train", add_help=False)
    p.add_argument("-p", "--project")
    p.add_argument("--team", help="the team (name or id) whose project the job goes in")
    p.add_argument("-n", "--name")
    p.add_argument("-g", "--gpu", help="accelerator per node, e.g. H100:8")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--memory")
    p.add_argument("--spot", action="store_true")
    p.add_argument(
        "--interactive",
        choices=[t.value for t in spec.InteractiveSessionTrigger],
        help="open an interactive session on each node: at start, on failure, or on demand",
    )
    p.add_argument(
        "--interactive-timeout",
        type=bounded(1, limits.MAX_SESSION_MINUTES),
        metavar="MIN",
        help="minutes before the interactive session times out (default 480)",
    )
    p.add_argument(
        "--priority",
        type=bounded(limits.MIN_PRIORITY, limits.MAX_PRIORITY),
        help="queue priority: while it waits for GPUs, higher starts first",
    )
    p.add_argument("--base-image")
    p.add_argument("--image-python", metavar="X.Y", help="the Python of an unknown --base-image")
    p.add_argument("--pip", action="append", default=[])
    p.add_argument("--requirements", type=Path)
    p.add_argument("--include", action="append", default=[])
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="SOURCE:/MOUNT",
        help="mirror weights (hf://, s3://, https://, ...) and mount them read-only at /MOUNT",
    )
    p.add_argument("--weights-secret", metavar="NAME", help="the secret --weights sources read")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--secret", action="append", default=[], metavar="NAME[:ENV_VAR]")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--legacy-hf-cache", action="store_true")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--checkpoint-path")
    p.add_argument("--checkpoint-volume-gib", type=bounded(1, limits.MAX_VOLUME_GIB))
    p.add_argument("--load-checkpoint", metavar="latest|JOB_ID[:NAME]")
    p.add_argument("--launcher", choices=["torchrun"])
    p.add_argument("--nproc-per-node", type=bounded(1, limits.MAX_NPROC_PER_NODE))
    p.add_argument("--out", default="", metavar="VARS")
    p.add_argument("--backend", choices=["local", "baseten"])
    p.add_argument("--wait", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("-o", dest="bind", metavar="VAR")
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="one job per combination of these notebook values (a grid)",
    )
    p.add_argument("--sweep-max-parallel", type=bounded(1, limits.MAX_SWEEP_RUNS), metavar="N")
    p.add_argument(
        "--sweep-max",
        type=bounded(1, limits.MAX_SWEEP_RUNS),
        default=sweeps.DEFAULT_MAX_RUNS,
        metavar="N",
        help=f"allow a sweep of more than {sweeps.DEFAULT_MAX_RUNS} runs",
    )
    return p


#: Options that only say how to run this cell here, not what the job is.
_NOT_RECORDED = {"wait", "dry_run", "bind", "backend", "sweep", "sweep_max", "sweep_max_parallel"}


def recorded_options(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The ``%%bt_train`` options the user set, as the job's manifest keeps them (to
    tell runs apart when comparing): ``--env`` values of secret-looking names hidden."""
    defaults = vars(train_parser().parse_args([]))
    found = []
    for dest, value in sorted(vars(args).items()):
        if dest in _NOT_RECORDED or value == defaults.get(dest) or value in (None, [], ""):
            continue
        if dest == "env":
            value = [
                f"{k}={'***' if shown_value(k, v) is None else v}"
                for k, _, v in (pair.partition("=") for pair in value)
            ]
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        found.append((f"--{dest.replace('_', '-')}", text[:200]))
    return tuple(found)


def parse_line(parser: Parser, line: str) -> argparse.Namespace:
    try:
        return parser.parse_args(shlex.split(line))
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(f"{parser.prog}: {exc}") from None
