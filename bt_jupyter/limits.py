"""Every bound on what a user, a client or a request may ask for: the one place they live.

The pydantic models of :mod:`bt_jupyter.spec` and :mod:`bt_jupyter.api` enforce these, so
the magics, the Python API, ``--dry-run`` and the local service refuse the same values with
the same one-line message. Baseten's public API spec bounds only the log page (1..1000) and
``node_count >= 1``; where Baseten documents no limit, the bound is a sane one chosen so
that no value inside it can overflow a store (SQLite integers are 64-bit), a process
(``execve`` refuses one argument or environment string over 128 KiB) or a path (255 bytes
per file name), and no honest request comes near it.

The helpers here also keep error messages short: :func:`shown` is how an error quotes the
input that was wrong, never more than ~60 characters of it.
"""

from __future__ import annotations

import re
from collections.abc import Sized
from typing import Any

__all__ = [
    "MAX_CHECKPOINT_REFERENCES",
    "MAX_COMMANDS",
    "MAX_COMMAND_CHARS",
    "MAX_CAPACITY_GPUS",
    "MAX_CPU_COUNT",
    "MAX_ENV_NAME_CHARS",
    "MAX_ENV_VALUE_CHARS",
    "MAX_ENV_VARS",
    "MAX_EPOCH_MILLIS",
    "MAX_ERRORS_SHOWN",
    "MAX_GPUS_PER_NODE",
    "MAX_LIST_ITEMS",
    "MAX_MEMORY_BYTES",
    "MAX_NAME_CHARS",
    "MAX_NODE_COUNT",
    "MAX_NPROC_PER_NODE",
    "MAX_PRIORITY",
    "MAX_REQUEST_BYTES",
    "MAX_SEARCH_STATUSES",
    "MAX_SESSION_MINUTES",
    "MAX_SSH_PUBLIC_KEY_CHARS",
    "MAX_STEP_SECONDS",
    "MAX_TEXT_CHARS",
    "MAX_VOLUME_GIB",
    "MAX_WORKSPACE_BYTES",
    "MIN_PRIORITY",
    "SHOWN_CHARS",
    "check_count",
    "check_int",
    "check_name",
    "check_no_nul",
    "check_path_segment",
    "check_relative_path",
    "shown",
]

#: What one push may send (a workspace, or a cell's --include files): Baseten's cap.
MAX_WORKSPACE_BYTES = 5 * 1024**3
#: Nodes of one job (Baseten's multi-node jobs are a few dozen nodes at most).
MAX_NODE_COUNT = 64
#: GPUs of one node: the largest Baseten instance types have 8 (``H100:8``, ``B200:8``).
MAX_GPUS_PER_NODE = 8
#: GPUs of one pool's capacity: every GPU the largest jobs could ask for, a thousand times.
MAX_CAPACITY_GPUS = MAX_NODE_COUNT * MAX_GPUS_PER_NODE * 1000
#: CPUs of one node (an 8-GPU node has ~200 vCPUs).
MAX_CPU_COUNT = 512
#: Processes per node that a launcher (torchrun) starts.
MAX_NPROC_PER_NODE = 512
#: More memory than any node has: a larger quantity is a typo, refused (not overflowed).
MAX_MEMORY_BYTES = 64 * 1024**4
#: A checkpoint volume (GiB).
MAX_VOLUME_GIB = 64 * 1024
#: Queue priority: a 32-bit integer, what a database integer column of Baseten's holds.
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
#: An interactive session's timeout (a week).
MAX_SESSION_MINUTES = 7 * 24 * 60
#: Project, job, team, checkpoint and secret names: a file name's length on every disk.
MAX_NAME_CHARS = 255
#: An OpenSSH public key line (an RSA-16384 key is about 2,800 characters).
MAX_SSH_PUBLIC_KEY_CHARS = 8 * 1024
#: Runs of one sweep, even with --sweep-max: each is a job packaged in this kernel.
MAX_SWEEP_RUNS = 1000
#: An environment variable's name and value, and one start command: ``execve`` refuses a
#: single argument or environment string of 128 KiB or more (MAX_ARG_STRLEN).
MAX_ENV_NAME_CHARS = 255
MAX_ENV_VALUE_CHARS = 64 * 1024
MAX_COMMAND_CHARS = 64 * 1024
#: Any other text field (an image name, a path, a pattern).
MAX_TEXT_CHARS = 8 * 1024
#: Environment variables and start commands of one job.
MAX_ENV_VARS = 512
MAX_COMMANDS = 256
#: Checkpoints loaded into one job, weight sources, dirs, patterns, artifacts.
MAX_CHECKPOINT_REFERENCES = 64
MAX_LIST_ITEMS = 256
#: Statuses of one search (there are 9; repeats are harmless, thousands are not).
MAX_SEARCH_STATUSES = 32
#: Epoch milliseconds: the largest whose nanoseconds still fit a 64-bit integer (2262).
MAX_EPOCH_MILLIS = (2**63 - 1) // 1_000_000
#: Metrics resolution (a day).
MAX_STEP_SECONDS = 24 * 3600
#: A JSON request body (256 start commands of 64 KiB fit, with room).
MAX_REQUEST_BYTES = 64 * 1024**2
#: How much of a wrong input an error message quotes.
SHOWN_CHARS = 60
#: How many problems of one request an error message lists (then "and N more").
MAX_ERRORS_SHOWN = 3

#: Control characters (C0, DEL, C1), line separators and bidi overrides: what makes a
#: name print as something else, break a line, or end a C string.
#: Unpaired surrogates (a JSON ``\\ud800`` escape) are no text: they cannot be stored or sent.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def shown(value: Any) -> str:
    """``value`` as an error message quotes it: its repr, cut to :data:`SHOWN_CHARS`.

    A huge integer is described by its size (``str()`` of one over 4300 digits fails)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"a {digits}-digit number"
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, (str, bytes)) else ""
    return f"{text[: SHOWN_CHARS - 10]}...{text[-6:]}{size}"


def check_int(value: int, low: int, high: int, unit: str = "") -> int:
    """``value`` if ``low <= value <= high``; a ValueError saying which end it passed."""
    if value < low:
        raise ValueError(f"must be >= {low}{unit}, got {shown(value)}")
    if value > high:
        raise ValueError(f"must be <= {high}{unit}, got {shown(value)}")
    return value


def check_count(items: Sized, high: int, what: str) -> None:
    """At most ``high`` entries in a list or mapping."""
    if len(items) > high:
        raise ValueError(f"at most {high} {what}, got {len(items)}")


def check_no_nul(text: str, what: str, high: int) -> str:
    """Free text that reaches a process (an env value, a command): no NUL byte (a process
    cannot receive one) and at most ``high`` characters."""
    if len(text) > high:
        raise ValueError(f"{what} is {len(text):,} characters; at most {high:,} are allowed")
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL character, which no process can receive")
    return text


def check_name(name: str, what: str = "name") -> str:
    """A name people read and the service stores: not blank, at most
    :data:`MAX_NAME_CHARS` characters, no control characters (NUL, newline, escape)."""
    if not name.strip():
        raise ValueError(f"{what} cannot be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(
            f"{what} is {len(name):,} characters; at most {MAX_NAME_CHARS} are allowed"
        )
    bad = _CONTROL.search(name)
    if bad is not None:
        char = bad.group()
        raise ValueError(
            f"{what} {shown(name)} contains the control character {char!r}; "
            "use printable characters"
        )
    return name


def check_relative_path(name: str, what: str = "name") -> str:
    """A name that is looked up under a folder (a checkpoint under ``rank-N/``): a
    :func:`check_name` that cannot climb out (not absolute, no ``..`` part)."""
    check_name(name, what)
    if name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name):
        raise ValueError(f"{what} {shown(name)} must be a relative path without '..'")
    return name


def check_path_segment(name: str, what: str = "name") -> str:
    """A name that becomes one folder on disk (a team's cache, a checkpoint): a
    :func:`check_name` that is also no path (no ``/`` or ``\\``, not ``.`` or ``..``)."""
    check_name(name, what)
    if "/" in name or "\\" in name or name.strip() in (".", ".."):
        raise ValueError(f"{what} {shown(name)} cannot contain '/' or '\\' or be '.' or '..'")
    return name
