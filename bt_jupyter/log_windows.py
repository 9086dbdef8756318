"""A job's whole log from a time-window log API (Baseten's), many windows at a time.

Baseten answers a log query only by time window: at most ``api.MAX_LOG_LIMIT`` lines and
7 days per request, oldest or newest first, with millisecond bounds (both inclusive) on
lines stamped in nanoseconds. Paging one window after another costs one round trip per
1000 lines, which is what makes a long job's log slow to download. Here the range is
split into disjoint windows fetched concurrently. A window whose first page comes back
full (it holds more) also has the newest page of its remainder read: the lines between
the two then lie in a known span, which is split again by the density both pages showed,
into pieces of most of a page each. Dense and bursty logs both parallelise, and a long
window with a short burst in it costs two requests, not a scatter of empty ones.

What it assumes: the lines of a window do not change while it is read (a finished job,
or one whose late lines have arrived); a line arriving meanwhile may be missed, as with
any time-window read.

Order and exactness: windows are disjoint and ordered, so lines come out in window order,
each window's own page first, then the windows its remainder was split into, then the
newest page's lines after them (a tree read in pre-order). A remainder starts at its
page's last millisecond (lines of that millisecond may follow), and that millisecond's
lines already read are skipped, counted per (timestamp, message, replica) so identical
lines are neither lost nor doubled.

The limit: a millisecond holding a full page of lines cannot be paged by time. Its oldest
page (ascending) and newest page (descending) are joined where they overlap, so up to
``2 * page - 1`` lines of one millisecond come out exactly; beyond that the lines between
the two pages cannot be reached through this API, and the millisecond is reported to
``on_overflow`` (by default a warning). truss pages from the last line's millisecond
plus one, losing the rest of every millisecond split by a page boundary; this module's
sequential predecessor re-read that millisecond but lost all but the first 1000 lines of
a millisecond holding more.

Pure algorithm: it knows nothing of HTTP, only of a ``fetch`` callable.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from bt_jupyter import api

#: Windows fetched at once by default: 8 requests in flight hide Baseten's round trip
#: without being a burst its rate limits would notice.
CONCURRENCY = 8
#: Pages fetched (or being fetched) ahead of the consumer, per unit of concurrency: the
#: bound on memory when the consumer is slower than the network.
AHEAD_PER_WORKER = 4
#: A remainder is split into at most this many windows per unit of concurrency: enough
#: to keep every worker busy on the next level, few enough that a wrong density estimate
#: (a burst) wastes few requests.
SPLIT_PER_WORKER = 4
#: A remainder is split so each piece is expected to hold this fraction of a page:
#: below 1, so most pieces come back complete in one request instead of needing another.
FILL = 0.7

NS_PER_MS = 1_000_000
Key = tuple[str, str, str | None]
log = logging.getLogger(__name__)


class Fetch(Protocol):
    """One request: lines stamped in ``[start_ms, end_ms]`` (epoch ms, both inclusive),
    at most ``limit``, always returned ascending (by timestamp, then arrival); the oldest
    ``limit`` of the window, or with ``newest`` the newest ``limit``."""

    def __call__(
        self, start_ms: int, end_ms: int, limit: int, *, newest: bool = False
    ) -> list[api.LogV1]: ...


def download(
    fetch: Fetch,
    start_ms: int,
    end_ms: int,
    *,
    concurrency: int = CONCURRENCY,
    page: int = api.MAX_LOG_LIMIT,
    ahead: int | None = None,
    on_overflow: Callable[[int], None] | None = None,
) -> Iterator[api.LogV1]:
    """Every line stamped in ``[start_ms, end_ms]``, ascending, each once.

    ``concurrency``: requests in flight at most; 1 pages one window after another on the
    calling thread (no threads: for short windows, and as the baseline). ``ahead``: windows
    read or being read and not yet consumed, at most (memory: each holds up to two pages;
    the head of the order, and newest pages read with a window, come on top),
    ``AHEAD_PER_WORKER * concurrency`` by default. ``on_overflow(ms)``: a millisecond
    held more lines than two pages reach (see the module's docstring). The first error of
    ``fetch`` in log order is raised after every line before it; closing the iterator
    early cancels what is pending and waits for the requests in flight, so no thread
    outlives it.
    """
    if concurrency < 1 or page < 1:
        raise ValueError(f"concurrency ({concurrency}) and page ({page}) must be >= 1")
    if start_ms > end_ms:
        return iter(())
    report = on_overflow or _warn_overflow
    if concurrency == 1:
        return _sequential(fetch, _initial(start_ms, end_ms, 1), page, report)
    pieces = _initial(start_ms, end_ms, concurrency)
    limit = max(ahead if ahead is not None else AHEAD_PER_WORKER * concurrency, concurrency)
    return _Scheduler(fetch, page, concurrency, limit, report).run(pieces)


# --------------------------------------------------------------------------- one window


@dataclass(eq=False)
class _Window:
    """A window still to read; ``seen``: lines of its first millisecond already yielded
    (by the page before it), to skip once each; ``ready``: lines already read."""

    start: int
    end: int
    seen: Counter[Key] | None = None
    ready: list[api.LogV1] | None = None  # its lines, read already: nothing to fetch


@dataclass(eq=False)
class _Step:
    """What reading a window's first page gave: its new lines, the windows of what is
    left (in order), and a millisecond whose lines could not all be reached."""

    lines: list[api.LogV1]
    rest: list[_Window]
    overflow_ms: int | None = None


def _step(fetch: Fetch, window: _Window, page: int, split_cap: int) -> _Step:
    """Read ``window``'s first page and say what is left, as windows in order.

    With ``split_cap`` 1 what is left stays one window (sequential paging). Otherwise a
    full first page is followed by the newest page of the remainder: the lines between
    the two then lie in a known span, split into pieces of about ``FILL`` of a page each
    by the density both pages showed (at least 2, so an underestimate does not become a
    long chain; at most ``split_cap``, so an overestimate wastes few requests). A long
    window whose lines are all in a short burst costs two requests, not a scatter of
    empty ones."""
    head = fetch(window.start, window.end, page)
    if len(head) < page:
        return _Step(_unseen(head, window.seen), [])
    last = _ms(head[-1])
    if _ms(head[0]) == last:
        # a full page within one millisecond: time cannot page it; join its newest page
        tail = fetch(last, last, page, newest=True)
        joined, exact = _join(head, tail, page)
        rest = [_Window(last + 1, window.end)] if last < window.end else []
        return _Step(_unseen(joined, window.seen), rest, None if exact else last)
    # the page ends inside millisecond `last`: more of it may follow, from there
    lines = _unseen(head, window.seen)
    carry = Counter(_key(x) for x in head if _ms(x) == last)
    if split_cap == 1:
        return _Step(lines, [_Window(last, window.end, carry)])
    tail = fetch(last, window.end, page, newest=True)
    if len(tail) < page:  # the whole remainder
        return _Step(lines + _unseen(tail, carry), [])
    # every line after the tail's first millisecond is in it; that millisecond itself
    # may have older lines, so it is read again with the span before it
    first = _ms(tail[0])
    known = len(head) + len(tail)
    seen_ms = (last - _ms(head[0]) + 1) + (_ms(tail[-1]) - first + 1)
    expected = known / seen_ms * (first - last + 1)
    pieces = min(max(math.ceil(expected / (FILL * page)), 2), split_cap)
    rest = _split(last, first, pieces, carry)
    newer = [x for x in tail if _ms(x) > first]
    if newer:
        rest.append(_Window(first + 1, window.end, ready=newer))
    return _Step(lines, rest)


def _join(head: list[api.LogV1], tail: list[api.LogV1], page: int) -> tuple[list[api.LogV1], bool]:
    """One millisecond's oldest page and newest page as one list, and whether it is
    surely all of that millisecond: true when they overlap in exactly one way (or the
    newest page is not full, so it holds the whole millisecond)."""
    if len(tail) < page:
        return tail, True
    head_keys = [_key(x) for x in head]
    tail_keys = [_key(x) for x in tail]
    fits: list[int] = []
    for i, k in enumerate(head_keys):
        overlap = len(head) - i
        if k == tail_keys[0] and overlap <= len(tail) and head_keys[i:] == tail_keys[:overlap]:
            fits.append(i)
            if len(fits) == 2:
                break
    if not fits:
        return head + tail, False  # no overlap: lines between them may be missing
    # the largest overlap never repeats a line; another fit means identical lines made
    # the join ambiguous, so some may be missing
    return head + tail[len(head) - fits[0] :], len(fits) == 1


def _split(start: int, end: int, pieces: int, carry: Counter[Key] | None) -> list[_Window]:
    """``[start, end]`` as ``pieces`` (at most one per millisecond) windows of about equal
    length; the first skips ``carry``."""
    length = end - start + 1
    pieces = max(1, min(pieces, length))
    bounds = [start + length * i // pieces for i in range(pieces + 1)]
    return [_Window(bounds[i], bounds[i + 1] - 1, carry if i == 0 else None) for i in range(pieces)]


def _initial(start: int, end: int, pieces: int) -> list[_Window]:
    """The first windows: at least ``pieces`` (work for every worker before anything is
    known of the log) and none longer than Baseten accepts."""
    length = end - start + 1
    per_week = math.ceil(length / (api.MAX_LOG_WINDOW_MS + 1))
    return _split(start, end, max(pieces, per_week), None)


def _unseen(lines: list[api.LogV1], seen: Counter[Key] | None) -> list[api.LogV1]:
    if not seen:
        return lines
    left = seen.copy()
    fresh = []
    for line in lines:
        key = _key(line)
        if left[key] > 0:
            left[key] -= 1
        else:
            fresh.append(line)
    return fresh


def _ms(line: api.LogV1) -> int:
    return int(line.timestamp) // NS_PER_MS


def _key(line: api.LogV1) -> Key:
    return (line.timestamp, line.message, line.replica)


def _warn_overflow(ms: int) -> None:
    log.warning(
        "millisecond %d of the log holds more lines than Baseten's log API can page "
        "(over %d): some of them are missing",
        ms,
        2 * api.MAX_LOG_LIMIT - 1,
    )


# --------------------------------------------------------------------------- readers


def _sequential(
    fetch: Fetch, windows: list[_Window], page: int, report: Callable[[int], None]
) -> Iterator[api.LogV1]:
    """One request at a time, on the caller's thread: each remainder stays one window."""
    order = list(reversed(windows))
    while order:
        step = _step(fetch, order.pop(), page, split_cap=1)
        if step.overflow_ms is not None:
            report(step.overflow_ms)
        yield from step.lines
        order.extend(reversed(step.rest))


@dataclass(eq=False)
class _Node:
    """A window in the tree of windows; ``path`` orders nodes as lines come out."""

    path: tuple[int, ...]
    window: _Window
    step: _Step | None = None
    error: BaseException | None = None
    children: list[_Node] = field(default_factory=list)


class _Scheduler:
    """Runs windows on a pool, always the earliest in log order first, and yields lines
    in order. Only the consumer's thread touches this state; workers run ``_step``.

    Bounds: ``concurrency`` requests in flight (a worker's two requests for one window
    are sequential); ``ahead`` windows read or being read and not yet consumed, except
    the head of the order, which may always start (else windows later in order could
    hold every slot while the head waits: a deadlock)."""

    def __init__(
        self,
        fetch: Fetch,
        page: int,
        concurrency: int,
        ahead: int,
        report: Callable[[int], None],
    ) -> None:
        self.fetch, self.page, self.report = fetch, page, report
        self.concurrency, self.ahead = concurrency, ahead
        self.split_cap = SPLIT_PER_WORKER * concurrency
        self.waiting: list[tuple[tuple[int, ...], _Node]] = []  # heap by path
        self.running: dict[Future[_Step], _Node] = {}
        self.held = 0  # started and not yet consumed
        self.failed_at: tuple[int, ...] | None = None

    def run(self, windows: Sequence[_Window]) -> Iterator[api.LogV1]:
        roots = [_Node((i,), w) for i, w in enumerate(windows)]
        self.waiting = [(n.path, n) for n in roots]
        heapq.heapify(self.waiting)
        order = list(reversed(roots))  # a stack: the head of the order on top
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="bt-log-window")
        try:
            while order:
                head = order[-1]
                self._start(pool, head)
                if head.step is None and head.error is None:
                    assert self.running, "the head of the order was never started"
                    done, _ = wait(self.running, return_when=FIRST_COMPLETED)
                    for future in done:
                        self._finish(self.running.pop(future), future)
                    continue
                if head.error is not None:
                    raise head.error
                assert head.step is not None
                order.pop()
                self.held -= 1
                order.extend(reversed(head.children))
                step, head.step = head.step, None
                if step.overflow_ms is not None:
                    self.report(step.overflow_ms)
                yield from step.lines
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, pool: ThreadPoolExecutor, head: _Node) -> None:
        while self.waiting and len(self.running) < self.concurrency:
            path, node = self.waiting[0]
            if self.failed_at is not None and path > self.failed_at:
                self.waiting.clear()  # after an error in order: never needed
                return
            if node is not head and self.held >= self.ahead:
                return
            heapq.heappop(self.waiting)
            future = pool.submit(_step, self.fetch, node.window, self.page, self.split_cap)
            self.running[future] = node
            self.held += 1

    def _finish(self, node: _Node, future: Future[_Step]) -> None:
        error = future.exception()
        if error is not None:
            node.error = error
            if self.failed_at is None or node.path < self.failed_at:
                self.failed_at = node.path
            return
        node.step = future.result()
        node.children = [_Node((*node.path, i), w) for i, w in enumerate(node.step.rest)]
        for child in node.children:
            if child.window.ready is None:
                heapq.heappush(self.waiting, (child.path, child))
            else:  # read with its parent: held (memory) until consumed
                child.step = _Step(child.window.ready, [])
                self.held += 1
