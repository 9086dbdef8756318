"""Pages of a job's log for ``GET bt-jupyter/jobs/{id}/logs``: tail, cursor, long-poll.

The browser holds an opaque cursor and asks for what came after it, so lines arrive
once each and none are missed across calls:

- local backend: the cursor is the local service's own follow cursor (its append order),
  read through :meth:`ApiClient.follow_batches` (``L<position>``);
- Baseten's cloud, which has only time windows: the cursor is the last millisecond
  returned plus digests of the lines of that millisecond already returned, so the next
  window (which starts at that millisecond) is deduplicated
  (``B<epoch ms>.<digest>...``).

An empty cursor starts with the newest ``tail`` lines. With ``follow`` the call waits,
up to ``timeout`` seconds, for at least one new line. ``done`` is true once the job has
ended and a read after that found nothing new.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from bt_jupyter import api
from bt_jupyter.client import LOG_GRACE_S, LOG_LOOK_BACK_MS, node_of
from bt_jupyter.jobs import Client, Job
from bt_jupyter.server.errors import BadRequest
from bt_jupyter.server.wire import JSON, updated_at

DEFAULT_TAIL = 500
MAX_TAIL = 5000
DEFAULT_TIMEOUT_S = 20.0
MAX_TIMEOUT_S = 30.0
#: Most lines of one answer from the cloud (more come with the next cursor).
MAX_LINES = 5000
CLOUD_POLL_S = 1.0
#: Lines can reach Baseten's log store shortly after the job ended: keep reading this
#: long after the end before saying ``done`` (as ApiClient.poll_logs and truss do).
CLOUD_LINGER_S = LOG_GRACE_S


@dataclass(frozen=True)
class LogQuery:
    cursor: str = ""
    tail: int = DEFAULT_TAIL
    follow: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    node: int | None = None


def _int(
    args: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    text = args.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, not {value}")
    return value


def parse_query(args: Mapping[str, str]) -> LogQuery:
    """The query string of a logs request (400 for a value it cannot use)."""
    follow = args.get("follow", "0").strip().lower()
    if follow not in ("", "0", "1", "false", "true"):
        raise BadRequest(f"follow must be 0 or 1, not {follow!r}")
    timeout_text = args.get("timeout", "").strip()
    try:
        timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise BadRequest(f"timeout must be a number of seconds, not {timeout_text!r}") from None
    if not timeout >= 0:  # also NaN
        raise BadRequest(f"timeout must be 0 or more seconds, not {timeout_text!r}")
    tail = _int(args, "tail", DEFAULT_TAIL, 1, MAX_TAIL)
    assert tail is not None
    return LogQuery(
        cursor=args.get("cursor", ""),
        tail=tail,
        follow=follow in ("1", "true"),
        timeout=min(timeout, MAX_TIMEOUT_S),
        node=_int(args, "node", None, 0, 100_000),
    )


@dataclass(frozen=True)
class LogPage:
    lines: list[api.LogV1]
    cursor: str
    done: bool

    def json(self) -> JSON:
        return {
            "logs": [line_json(line) for line in self.lines],
            "cursor": self.cursor,
            "done": self.done,
        }


def line_json(line: api.LogV1) -> JSON:
    return {"timestamp": _ms(line), "message": line.message, "node": node_of(line.replica)}


def read(client: Client, job_id: str, query: LogQuery) -> JSON:
    """One page of the job's log after ``query.cursor`` (blocking up to the timeout)."""
    job = client.job(job_id)
    deadline = time.monotonic() + (query.timeout if query.follow else 0.0)
    if client.api.local_extensions:
        return _read_local(job, query, deadline).json()
    return _read_cloud(job, query, deadline).json()


def _ms(line: api.LogV1) -> int:
    return int(line.timestamp) // 1_000_000


def _on_node(line: api.LogV1, node: int | None) -> bool:
    return node is None or node_of(line.replica) == node


# --------------------------------------------------------------------------- local


def _local_position(cursor: str) -> int | None:
    if not cursor:
        return None
    if cursor.startswith("L") and cursor[1:].isdigit():
        return int(cursor[1:])
    raise BadRequest(f"invalid log cursor {cursor!r} for the local backend")


def _read_local(job: Job, query: LogQuery, deadline: float) -> LogPage:
    start = _local_position(query.cursor)
    position, tail = (start or 0), (query.tail if start is None else None)
    moved = start is not None
    while True:
        wait = max(0, math.ceil(deadline - time.monotonic()))
        batch = next(
            iter(
                job.client.api.follow_batches(
                    job.project_id, job.id, cursor=position, poll_timeout=wait, tail=tail
                )
            )
        )
        if batch.logs:
            position, tail, moved = batch.logs[-1].cursor, None, True
        lines: list[api.LogV1] = [line for line in batch.logs if _on_node(line, query.node)]
        # read after the job had ended (the service reads the status first) and empty
        done = batch.status.is_terminal and not batch.logs
        if lines or done or time.monotonic() >= deadline:
            return LogPage(lines, f"L{position}" if moved else query.cursor, done)


# --------------------------------------------------------------------------- cloud


@dataclass(frozen=True)
class _Mark:
    """Where a cloud reader is: the last millisecond returned, and its lines returned."""

    ms: int
    seen: frozenset[str]

    def encode(self) -> str:
        return "B" + ".".join([str(self.ms), *sorted(self.seen)])

    @classmethod
    def decode(cls, cursor: str) -> _Mark | None:
        if not cursor:
            return None
        parts = cursor[1:].split(".")
        if cursor.startswith("B") and parts[0].isdigit() and all(_is_digest(p) for p in parts[1:]):
            return cls(int(parts[0]), frozenset(parts[1:]))
        raise BadRequest(f"invalid log cursor {cursor!r} for the baseten backend")

    def after(self, fresh: list[api.LogV1]) -> _Mark:
        last = _ms(fresh[-1])
        seen = {_digest(line) for line in fresh if _ms(line) == last}
        return _Mark(last, frozenset(seen | self.seen if last == self.ms else seen))


def _digest(line: api.LogV1) -> str:
    key = f"{line.timestamp}\0{line.replica}\0{line.message}".encode()
    return hashlib.blake2b(key, digest_size=6).hexdigest()


def _is_digest(text: str) -> bool:
    return len(text) == 12 and all(c in "0123456789abcdef" for c in text)


def _cloud_tail(job: Job, tail: int) -> list[api.LogV1]:
    """The newest ``tail`` lines (at most one request), oldest first: a window that ends
    at the job's end (or now) and starts at its creation, at most 7 days before."""
    last = job.updated_at.timestamp() if job.status.is_terminal else time.time()
    end = int(last * 1000) + LOG_LOOK_BACK_MS
    since = max(int(job.created_at.timestamp() * 1000) - 1000, end - api.MAX_LOG_WINDOW_MS)
    window = job.client.api.logs(
        job.project_id,
        job.id,
        start_epoch_millis=since,
        end_epoch_millis=end,
        direction=api.SortOrderV1.DESC,
        limit=min(tail, api.MAX_LOG_LIMIT),
    )
    return window[::-1]


def _cloud_after(job: Job, mark: _Mark) -> list[api.LogV1]:
    fresh: list[api.LogV1] = []
    for line in job.client.api.all_logs(job.project_id, job.id, start_epoch_millis=mark.ms):
        if _digest(line) in mark.seen:
            continue
        fresh.append(line)
        if len(fresh) >= MAX_LINES:
            break
    return fresh


def _read_cloud(job: Job, query: LogQuery, deadline: float) -> LogPage:
    mark = _Mark.decode(query.cursor)
    while True:
        job.refresh()  # the status before the read: a job seen ended has written its lines
        ended = job.status.is_terminal
        ended_for = (datetime.now(timezone.utc) - updated_at(job)).total_seconds()
        fresh = _cloud_tail(job, query.tail) if mark is None else _cloud_after(job, mark)
        if fresh:
            mark = (mark or _Mark(-1, frozenset())).after(fresh)
        lines = [line for line in fresh if _on_node(line, query.node)]
        done = ended and not fresh and ended_for >= CLOUD_LINGER_S
        left = deadline - time.monotonic()
        if lines or done or left <= 0:
            return LogPage(lines, mark.encode() if mark else query.cursor, done)
        time.sleep(min(CLOUD_POLL_S, left))
