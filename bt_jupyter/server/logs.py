"""Pages of a job's log for ``GET bt-jupyter/jobs/{id}/logs``: tail, cursor, long-poll.

The browser holds an opaque cursor and asks for what came after it, so lines arrive
once each and none are missed across calls:

- local backend: the cursor is the local service's own follow cursor (its append order),
  read through :meth:`ApiClient.follow_batches` (``L<position>``);
- Baseten's cloud, which has only time windows: the cursor names a reader kept here
  (:class:`bt_jupyter.client.LogPoller`) that re-reads the last minute, as truss does,
  so lines that reach Baseten late are still sent, once (``B<token>.<epoch ms>``).

An empty cursor starts with the newest ``tail`` lines. With ``follow`` the call waits,
up to ``timeout`` seconds, for at least one new line. ``done`` is true once the job has
ended and a read after that found nothing new.

Scrolling back: each answer that starts at the newest lines (or goes back) carries
``earlier``, a cursor for the ``tail`` lines before its first one (empty: none before);
``before=<earlier>`` reads them, so a million-line log is browsed a page at a time.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from bt_jupyter import api
from bt_jupyter.client import LOG_GRACE_S, LOG_LOOK_BACK_MS, LogLine, LogPoller, node_of
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
    before: str = ""


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
        before=args.get("before", ""),
    )


Line = api.LogV1 | LogLine


@dataclass(frozen=True)
class LogPage:
    lines: Sequence[Line]
    cursor: str
    done: bool
    #: Where the lines before these start ("": none, or not asked).
    earlier: str = ""

    def json(self) -> JSON:
        return {
            "logs": [line_json(line) for line in self.lines],
            "cursor": self.cursor,
            "done": self.done,
            "earlier": self.earlier,
        }


def line_json(line: Line) -> JSON:
    return {"timestamp": _ms(line), "message": line.message, "node": node_of(line.replica)}


def read(client: Client, job_id: str, query: LogQuery) -> JSON:
    """One page of the job's log after ``query.cursor`` (blocking up to the timeout)."""
    job = client.job(job_id)
    deadline = time.monotonic() + (query.timeout if query.follow else 0.0)
    local = client.backend.follows_by_cursor
    if query.before:
        return (_earlier_local(job, query) if local else _earlier_cloud(job, query)).json()
    if local:
        return _read_local(job, query, deadline).json()
    return _read_cloud(job, query, deadline).json()


def _ms(line: Line) -> int:
    return int(line.timestamp) // 1_000_000


def _on_node(line: Line, node: int | None) -> bool:
    return node is None or node_of(line.replica) == node


# --------------------------------------------------------------------------- local


def _local_position(cursor: str) -> int | None:
    if not cursor:
        return None
    if cursor.startswith("L") and cursor[1:].isdigit():
        return int(cursor[1:])
    raise BadRequest(f"invalid log cursor {cursor!r} for the local backend")


def _read_local(job: Job, query: LogQuery, deadline: float) -> LogPage:
    position = _local_position(query.cursor)
    if position is None:  # the newest lines, one indexed read however long the log is
        return _local_before(job, query, 0)
    while True:
        wait = max(0, math.ceil(deadline - time.monotonic()))
        batch = job.follow_batch(position, wait, None)
        if batch.logs:
            position = batch.logs[-1].cursor
        lines: list[api.LogV1] = [line for line in batch.logs if _on_node(line, query.node)]
        # read after the job had ended (the service reads the status first) and empty
        done = batch.status.is_terminal and not batch.logs
        if lines or done or time.monotonic() >= deadline:
            return LogPage(lines, f"L{position}", done)


def _earlier_local(job: Job, query: LogQuery) -> LogPage:
    position = _local_position(query.before)
    if not position:
        raise BadRequest(f"invalid log cursor {query.before!r} to read back from")
    return _local_before(job, query, position)


def _local_before(job: Job, query: LogQuery, position: int) -> LogPage:
    """The ``tail`` lines before a position (0: the end); a read back keeps the caller's
    follow cursor, a tail starts one."""
    page = job.log_before(position, query.tail, query.node)
    lines = list(page.lines())
    earlier = f"L{page.first}" if page.count == query.tail else ""
    if position:
        return LogPage(lines, query.cursor, False, earlier)
    return LogPage(lines, f"L{page.last}", page.status.is_terminal and not lines, earlier)


# --------------------------------------------------------------------------- cloud


class _Pollers:
    """The cloud readers of open log panels, by cursor token (newest ``size`` kept).

    A cloud cursor is ``B<token>.<ms of its last poll>``. The token finds the reader,
    which remembers the lines of its last minute so late lines are caught once; a token
    this process no longer has (a server restart, an evicted reader) starts a new reader
    a look-back before that millisecond, so nothing is missed (the panel drops lines it
    already shows).
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._readers: OrderedDict[str, LogPoller] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, job: Job, since_ms: int) -> tuple[str, LogPoller]:
        reader = job.log_poller(since_ms)
        token = secrets.token_hex(8)
        with self._lock:
            self._readers[token] = reader
            while len(self._readers) > self.size:
                self._readers.popitem(last=False)
        return token, reader

    def find(self, job: Job, cursor: str) -> tuple[str, LogPoller]:
        token, _, ms = cursor[1:].partition(".")
        if not cursor.startswith("B") or not token.isalnum() or not ms.isdigit():
            raise BadRequest(f"invalid log cursor {cursor!r} for the baseten backend")
        with self._lock:
            reader = self._readers.get(token)
            if reader is not None and reader.job_id == job.id:
                self._readers.move_to_end(token)
                return token, reader
        token, reader = self.new(job, int(ms) - LOG_LOOK_BACK_MS)
        reader.last_poll = int(ms)
        return token, reader


_POLLERS = _Pollers()


def _cursor(token: str, reader: LogPoller) -> str:
    return f"B{token}.{reader.last_poll or reader.floor}"


def _cloud_tail(job: Job, tail: int) -> list[api.LogV1]:
    """The newest ``tail`` lines (at most one request), oldest first: a window that ends
    at the job's end (or now) and starts at its creation, at most 7 days before."""
    end = job.wire.log_until_ms(LOG_LOOK_BACK_MS)
    since = max(job.wire.log_since_ms, end - api.MAX_LOG_WINDOW_MS)
    return job.log_window(since, end, min(tail, api.MAX_LOG_LIMIT))


def _earlier_cloud(job: Job, query: LogQuery) -> LogPage:
    """The newest ``tail`` lines up to a millisecond (inclusive: the panel drops the lines
    of that millisecond it already shows), at most 7 days back."""
    if not (query.before.startswith("T") and query.before[1:].isdigit()):
        raise BadRequest(f"invalid log cursor {query.before!r} to read back from")
    end = int(query.before[1:])
    since = max(job.wire.log_since_ms, end - api.MAX_LOG_WINDOW_MS)
    lines = job.log_window(since, end, min(query.tail, api.MAX_LOG_LIMIT)) if since <= end else []
    full = len(lines) == min(query.tail, api.MAX_LOG_LIMIT)
    shown = [line for line in lines if _on_node(line, query.node)]
    return LogPage(shown, query.cursor, False, f"T{_ms(lines[0])}" if full else "")


def _read_cloud(job: Job, query: LogQuery, deadline: float) -> LogPage:
    if query.cursor:
        token, reader = _POLLERS.find(job, query.cursor)
        first: list[api.LogV1] | None = None
    else:  # the newest lines first; a reader then follows from there
        polled = int(time.time() * 1000)
        first = _cloud_tail(job, query.tail)
        # lines older than the tail are not the panel's: the reader starts at the tail
        since = _ms(first[0]) if first else job.wire.log_since_ms
        token, reader = _POLLERS.new(job, since)
        reader.mark_seen(first, polled)
    while True:
        job.refresh()  # the status before the read: a job seen ended has written its lines
        ended = job.status.is_terminal
        ended_for = (datetime.now(timezone.utc) - updated_at(job)).total_seconds()
        fresh = first if first is not None else reader.poll(limit=MAX_LINES)
        first = None
        lines = [line for line in fresh if _on_node(line, query.node)]
        done = ended and not fresh and ended_for >= CLOUD_LINGER_S
        left = deadline - time.monotonic()
        if lines or done or left <= 0:
            full = query.tail if query.tail < api.MAX_LOG_LIMIT else api.MAX_LOG_LIMIT
            older = not query.cursor and fresh and len(fresh) >= full
            earlier = f"T{_ms(fresh[0])}" if older else ""
            return LogPage(lines, _cursor(token, reader), done, earlier)
        time.sleep(min(CLOUD_POLL_S, left))
