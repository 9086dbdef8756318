"""A whole log from a time-window log API, many windows at a time (bt_jupyter.log_windows).

Unit tests run against an in-memory log that answers exactly as Baseten's log API does
(inclusive millisecond bounds on nanosecond timestamps, ascending or newest first, at most
``limit`` lines, at most 7 days per window), and refuses what Baseten refuses. One test
reads a real job's log from the local service in baseten mode.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bt_jupyter import api, log_windows, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import Store
from tests.helpers import paced_lines, running_service, submit, wait_for, wait_terminal

MS = 1_000_000
T0 = 1_700_000_000_000  # an epoch millisecond


def line(ms: int, message: str, ns: int = 0, replica: str | None = "0") -> api.LogV1:
    return api.LogV1(timestamp=str(ms * MS + ns), message=message, replica=replica)


class FakeLog:
    """Baseten's log API over a list of lines, in arrival order. ``before_answer`` runs
    in the requesting thread before each answer (to slow it, block it, or fail it)."""

    def __init__(
        self,
        lines: list[api.LogV1],
        before_answer: Callable[[int, int, bool], None] | None = None,
    ) -> None:
        # ascending by timestamp, then arrival (Python's sort is stable)
        self.lines = sorted(lines, key=lambda x: int(x.timestamp))
        self.stamps = [int(x.timestamp) for x in self.lines]
        self.before_answer = before_answer
        self.lock = threading.Lock()
        self.calls: list[tuple[int, int, int, bool]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.lines_sent = 0
        self.sent: set[str] = set()  # distinct lines answered (by message)

    def __call__(
        self, start_ms: int, end_ms: int, limit: int, *, newest: bool = False
    ) -> list[api.LogV1]:
        assert start_ms <= end_ms, f"start {start_ms} after end {end_ms}"
        assert end_ms - start_ms <= api.MAX_LOG_WINDOW_MS, "a window over 7 days"
        assert 1 <= limit <= api.MAX_LOG_LIMIT
        with self.lock:
            self.calls.append((start_ms, end_ms, limit, newest))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.before_answer:
                self.before_answer(start_ms, end_ms, newest)
            low = bisect.bisect_left(self.stamps, start_ms * MS)
            high = bisect.bisect_right(self.stamps, (end_ms + 1) * MS - 1)
            window = self.lines[low:high]
            page = window[-limit:] if newest else window[:limit]
            with self.lock:
                self.lines_sent += len(page)
                self.sent.update(x.message for x in page)
            return list(page)
        finally:
            with self.lock:
                self.in_flight -= 1


def ids(lines: list[api.LogV1]) -> list[int]:
    """Lines as their positions in the log (each test line's message is unique unless
    the test says otherwise)."""
    return [int(x.message.split()[0]) for x in lines]


def numbered(stamps: list[tuple[int, int]]) -> list[api.LogV1]:
    """Lines at (ms, ns within it), messages numbered in log order."""
    ordered = sorted(stamps)
    return [line(ms, f"{i} m", ns) for i, (ms, ns) in enumerate(ordered)]


def read(
    log: FakeLog,
    start: int,
    end: int,
    overflow: list[int] | None = None,
    **kw: int,
) -> list[api.LogV1]:
    sink = overflow if overflow is not None else []
    return list(log_windows.download(log, start, end, on_overflow=sink.append, **kw))


def window_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bt-log-window")]


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_dense_log_comes_out_whole_in_order(concurrency: int) -> None:
    # 20,000 lines over 2 s, ~10 a millisecond: pages end inside a millisecond
    lines = numbered([(T0 + i // 10, (i % 10) * 1000) for i in range(20_000)])
    log = FakeLog(lines)
    got = read(log, T0 - 5000, T0 + 60_000, concurrency=concurrency)
    assert ids(got) == list(range(20_000))
    if concurrency == 1:
        assert log.most_in_flight == 1
        assert len(log.calls) == 21  # the old algorithm: one request per page, and one


def test_windows_run_concurrently_and_within_the_bound() -> None:
    lines = numbered([(T0 + i // 4, i % 4) for i in range(12_000)])
    log = FakeLog(lines, before_answer=lambda *_: time.sleep(0.005))
    got = read(log, T0, T0 + 10_000, concurrency=4)
    assert ids(got) == list(range(12_000))
    assert log.most_in_flight == 4


def test_many_lines_of_one_millisecond_across_page_boundaries() -> None:
    # 2,500 lines per millisecond over 4 ms, page 1000: no page holds a millisecond
    # whole, and no millisecond is more than 2 pages
    stamps = [(T0 + ms, i) for ms in range(4) for i in range(1_500)]
    lines = numbered([*stamps, (T0 - 3, 0), (T0 + 9, 0)])
    for concurrency in (1, 8):
        overflow: list[int] = []
        got = read(FakeLog(lines), T0 - 10, T0 + 10, overflow, concurrency=concurrency)
        assert ids(got) == list(range(len(lines)))
        assert overflow == []


def test_a_millisecond_over_two_pages_loses_only_its_middle_and_says_so() -> None:
    page = 10
    dense = [(T0 + 5, i) for i in range(2 * page + 7)]  # 7 lines no request can reach
    lines = numbered([(T0 + ms, 0) for ms in range(5)] + dense + [(T0 + 6, 0), (T0 + 7, 0)])
    for concurrency in (1, 3):
        overflow: list[int] = []
        got = ids(read(FakeLog(lines), T0, T0 + 9, overflow, concurrency=concurrency, page=page))
        first_dense, after = 5, 5 + len(dense)
        # everything else exact; the dense millisecond's oldest and newest pages
        reachable = [
            *range(first_dense),
            *range(first_dense, first_dense + page),
            *range(after - page, after),
            after,
            after + 1,
        ]
        assert got == reachable
        assert overflow == [T0 + 5]


def test_a_millisecond_of_just_under_two_pages_is_exact() -> None:
    page = 10
    lines = numbered([(T0, i) for i in range(2 * page - 1)] + [(T0 + 1, 0)])
    overflow: list[int] = []
    got = read(FakeLog(lines), T0, T0 + 1, overflow, concurrency=2, page=page)
    assert ids(got) == list(range(2 * page))
    assert overflow == []


def test_identical_lines_are_each_kept() -> None:
    # the same (timestamp, message, replica) three times, across a page boundary, and
    # the same message and replica in other milliseconds
    page = 4
    same = [line(T0 + 1, "same", 7) for _ in range(3)]
    lines = [line(T0, "a"), line(T0, "b"), *same, line(T0 + 2, "same", 7), line(T0 + 3, "same")]
    for concurrency in (1, 2):
        overflow: list[int] = []
        got = read(FakeLog(lines), T0, T0 + 3, overflow, concurrency=concurrency, page=page)
        assert got == lines
        assert overflow == []


def test_identical_lines_filling_a_millisecond_are_reported_ambiguous() -> None:
    # 15 identical lines in one millisecond, page 10: the two pages overlap in several
    # ways; never a duplicate, and the loss is said
    page = 10
    lines = [line(T0, "x", 1) for _ in range(15)]
    overflow: list[int] = []
    got = read(FakeLog(lines), T0, T0, overflow, concurrency=1, page=page)
    assert len(got) == page
    assert overflow == [T0]


def test_bursty_logs_over_three_weeks() -> None:
    day = 86_400_000
    stamps = [(T0 + d * day + 3_600_000 * h, 0) for d in range(21) for h in range(0, 24, 6)]
    stamps += [(T0 + 2 * day + i // 50, i) for i in range(7_000)]  # a burst on day 2
    stamps += [(T0 + 17 * day + i, 0) for i in range(3_000)]  # and a steady one on day 17
    lines = numbered(stamps)
    for concurrency in (1, 8):
        log = FakeLog(lines)
        assert ids(read(log, T0 - day, T0 + 22 * day, concurrency=concurrency)) == list(
            range(len(lines))
        )  # the fake refused any window over 7 days
        if concurrency == 1:
            sequential_calls = len(log.calls)
    assert sequential_calls < 40


def test_empty_windows() -> None:
    log = FakeLog([])
    assert read(log, T0, T0 + 30 * 86_400_000, concurrency=8) == []
    assert len(log.calls) == 8  # one request per initial window, nothing more
    assert read(FakeLog([line(T0, "1")]), T0 + 1, T0) == []  # start after end


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    counts=st.lists(st.integers(0, 9), min_size=1, max_size=60),
    gaps=st.lists(st.integers(0, 500), min_size=1, max_size=60),
    page=st.integers(5, 8),
    concurrency=st.sampled_from([1, 2, 5]),
    same_ns=st.booleans(),
)
def test_no_duplicate_no_gap_in_order_for_any_distribution(
    counts: list[int], gaps: list[int], page: int, concurrency: int, same_ns: bool
) -> None:
    """Runs of lines per millisecond (at most ``2 * page - 1``), at random gaps; with
    ``same_ns`` every line of a millisecond has the same timestamp (order by arrival)."""
    stamps: list[tuple[int, int]] = []
    ms = T0
    for n, count in enumerate(counts):
        stamps += [(ms, 0 if same_ns else i) for i in range(count)]
        ms += gaps[n % len(gaps)] + 1
    lines = numbered(stamps)
    overflow: list[int] = []
    got = read(FakeLog(lines), T0, ms, overflow, concurrency=concurrency, page=page)
    assert ids(got) == list(range(len(lines)))
    assert overflow == []


# --------------------------------------------------------------------------- resources


def test_pages_read_ahead_stay_bounded_for_a_slow_consumer() -> None:
    page, ahead = 10, 6
    log = FakeLog(numbered([(T0 + i, 0) for i in range(3_000)]))
    lines = log_windows.download(log, T0, T0 + 3_000, concurrency=3, page=page, ahead=ahead)
    most_ahead = n = 0
    for n, _ in enumerate(lines, 1):
        if n % page == 0:  # let every fetch in flight finish before reading on
            wait_for(lambda: log.in_flight == 0, 10, "fetches in flight to finish", every=0.001)
        most_ahead = max(most_ahead, len(log.sent) - n)
        # pages held: `ahead`, the head of the order (which may always start), and the
        # newest pages of windows that finished meanwhile (read with their first pages)
        assert len(log.sent) - n <= (ahead + 1 + 3) * 2 * page
    assert n == 3_000
    assert most_ahead > page  # it did read ahead


def test_closing_early_stops_every_thread_and_request() -> None:
    log = FakeLog(
        numbered([(T0 + i // 3, 0) for i in range(30_000)]),
        before_answer=lambda *_: time.sleep(0.05),
    )
    lines = log_windows.download(log, T0, T0 + 10_000, concurrency=4)
    first = [next(lines) for _ in range(5)]
    assert ids(first) == list(range(5))
    assert window_threads()
    wait_for(lambda: log.in_flight, 10, "the next windows to be read")
    lines.close()
    assert log.in_flight == 0  # close waited for the requests in flight
    assert window_threads() == []
    calls = len(log.calls)
    assert calls < 30  # far from all 30,000 lines' pages
    with pytest.raises(StopIteration):
        next(lines)
    assert len(log.calls) == calls


def test_the_first_error_in_log_order_is_raised_after_every_line_before_it() -> None:
    later_failed = threading.Event()

    def failing(start_ms: int, end_ms: int, newest: bool) -> None:
        if start_ms <= T0 + 7_000 <= end_ms:
            later_failed.set()
            raise RuntimeError("later window")
        if start_ms <= T0 + 2_000 <= end_ms:
            later_failed.wait(10)  # the earlier window fails after the later one
            raise RuntimeError("earlier window")

    log = FakeLog(numbered([(T0 + i, 0) for i in range(10_000)]), before_answer=failing)
    got: list[api.LogV1] = []
    with pytest.raises(RuntimeError, match="earlier window"):
        got.extend(log_windows.download(log, T0, T0 + 9_999, concurrency=8))
    assert later_failed.is_set()
    assert ids(got) == list(range(len(got)))  # in order, up to the failing window
    assert got
    assert int(got[-1].timestamp) // MS < T0 + 2_000
    assert window_threads() == []


def test_windows_after_an_error_are_never_read() -> None:
    day = 86_400_000
    early_done = threading.Event()

    def failing(start_ms: int, end_ms: int, newest: bool) -> None:
        if start_ms <= T0 + 8 * day <= end_ms:  # the second of 3 windows (7 days each)
            early_done.set()
            raise RuntimeError("second window")
        if start_ms == T0:
            early_done.wait(10)  # the first window answers after the error is known

    stamps = [(T0 + i, 0) for i in range(1_500)] + [(T0 + d * day, 0) for d in range(1, 21)]
    log = FakeLog(numbered(stamps), before_answer=failing)
    got: list[api.LogV1] = []
    with pytest.raises(RuntimeError, match="second window"):
        got.extend(log_windows.download(log, T0, T0 + 21 * day - 1, concurrency=2))
    assert ids(got) == list(range(1_500 + 6))  # the first window (days 0-6), whole
    assert max(start for start, *_ in log.calls) < T0 + 14 * day  # not the third


def test_an_overflow_is_a_warning_by_default(caplog: pytest.LogCaptureFixture) -> None:
    lines = [line(T0, f"{i} m", i) for i in range(25)]
    with caplog.at_level("WARNING", logger="bt_jupyter.log_windows"):
        got = list(log_windows.download(FakeLog(lines), T0, T0, concurrency=1, page=10))
    assert len(got) == 20
    assert f"millisecond {T0} of the log holds more lines" in caplog.text


def test_an_error_in_the_first_window_stops_the_sequential_read() -> None:
    def failing(*_: object) -> None:
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError, match="gone"):
        read(FakeLog([line(T0, "0")], before_answer=failing), T0, T0 + 5, concurrency=1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        log_windows.download(FakeLog([]), T0, T0, concurrency=0)


# --------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def baseten_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """The local service as Baseten's stand-in, each log request 50 ms late."""
    home = Home(tmp_path_factory.mktemp("log_windows"))
    with running_service(
        home,
        BT_JUPYTER_SERVICE_MODE="baseten",
        BT_JUPYTER_SERVICE_QUEUE_S="0",
        BT_JUPYTER_SERVICE_LOG_LATENCY_S="0.05",
    ):
        yield home


def test_a_real_job_s_whole_log_equals_the_store(baseten_home: Home, tmp_path: Path) -> None:
    with ApiClient.local(baseten_home.root) as client:
        project = client.upsert_project("log-windows")
        job = submit(
            client,
            project,
            [paced_lines(6000)],
        )
        done = wait_terminal(client, job)
        assert done.status == spec.TrainingJobStatus.COMPLETED, done.error_message
        stored = Store(baseten_home.db).logs(job.id, limit=100_000)  # by ts_ns, then id
        # every third line reaches the log API late (1.5 s): wait until all have
        late_s = 1.5
        wait_for(
            lambda: time.time_ns() > stored[-1].ts_ns + late_s * 1e9,
            10,
            "the late lines to reach the log API",
            every=0.05,
        )
        started = time.monotonic()
        one = client.logs(project.id, job.id, start_epoch_millis=1, end_epoch_millis=2, limit=1)
        assert one == []
        assert time.monotonic() - started >= 0.05  # the injected latency applies
        windowed = list(client.all_logs(project.id, job.id))
        sequential = list(client.all_logs(project.id, job.id, concurrency=1))
    expected = [(str(r.ts_ns), r.message, str(r.node) if r.node is not None else None)
                for r in stored]  # fmt: skip
    assert len(stored) > 6000
    assert [(x.timestamp, x.message, x.replica) for x in windowed] == expected
    assert [(x.timestamp, x.message, x.replica) for x in sequential] == expected
