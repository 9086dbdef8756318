"""Reading logs at the speed of the disk: the bulk read (``/v1/local/.../logs/lines``),
``Job.logs()``, the sidebar's tail and read back, and the runner's chunked reading.

Each read is checked line by line (count, order, no duplicate) while the log is being
written, since a fast path that drops or repeats a line under load is worse than a slow
one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from bt_jupyter import Client, api, spec
from bt_jupyter.client import ApiClient, LogLine, LogPage
from bt_jupyter.local.home import Home
from bt_jupyter.local.log_sink import LogSink
from bt_jupyter.local.store import MAX_ID, Store
from bt_jupyter.local.wire import log_page_json
from bt_jupyter.server import logs as panel_logs
from bt_jupyter.server.errors import BadRequest
from tests.helpers import submit, wait_status, wait_terminal

S = spec.TrainingJobStatus

#: Two nodes each print ``<rank> <i>`` for i in range(LINES), in bursts, with a pause
#: between bursts so readers catch the log mid-write many times.
BURSTS = """
import os, sys, time
rank, lines = os.environ["BT_NODE_RANK"], int(sys.argv[1])
for base in range(0, lines, 5000):
    sys.stdout.write("".join(f"{rank} {i}\\n" for i in range(base, min(lines, base + 5000))))
    sys.stdout.flush()
    time.sleep(0.01)
"""


@pytest.fixture
def bt(local_home: Home) -> Iterator[Client]:
    with Client.local(local_home.root) as client:
        yield client


def _per_node(lines: list[LogLine]) -> dict[int, list[int]]:
    nodes: dict[int, list[int]] = {}
    for line in lines:
        if line.node is not None:
            rank, i = line.message.split()
            assert int(rank) == line.node
            nodes.setdefault(line.node, []).append(int(i))
    return nodes


def test_reads_while_the_log_is_written_are_exact_and_in_order(
    bt: Client, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    lines = 60_000
    wire = submit(
        client,
        project,
        [f"python bursts.py {lines}"],
        {"bursts.py": BURSTS},
        compute=spec.Compute(node_count=2),
    )
    job = bt.job(wire.id)
    followed: list[LogLine] = []
    follower = threading.Thread(target=lambda: followed.extend(job.logs(follow=True)))
    follower.start()
    wait_status(client, wire, S.RUNNING)
    snapshots = []
    while not job.refresh().status.is_terminal:
        snapshots.append(list(job.logs()))  # mid-write: a prefix of the final log
    follower.join(120)
    assert not follower.is_alive()
    assert job.status == S.COMPLETED, job.error_message
    final = list(job.logs())
    assert _per_node(final) == {0: list(range(lines)), 1: list(range(lines))}
    assert followed == final  # the same lines, each once, in the same order
    stamps = [line.timestamp for line in final]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    assert snapshots, "the job ended before a read could overlap its writing"
    for snapshot in snapshots:
        assert snapshot == final[: len(snapshot)]


def test_a_sink_and_a_paged_reader_at_once_lose_and_repeat_nothing(local_home: Home) -> None:
    store = Store(local_home.db)
    sink = LogSink(store, "sinkjob", [])
    total, chunk = 200_000, 1000

    def write() -> None:
        for base in range(0, total, chunk):
            messages = [str(i) for i in range(base, base + chunk)]
            levels = [3 if i % 7 == 0 else 1 for i in range(base, base + chunk)]
            sink.add_lines(messages, base // chunk % 3, levels, 0)
        sink.close()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    cursor, pages = 0, 0
    while writer.is_alive() or len(seen) < total:
        page = store.log_page("sinkjob", cursor, limit=7_777)  # pages cut across batches
        if page.count:
            seen += [int(m) for m in json.loads(page.messages)]
            assert page.last_id is not None
            cursor, pages = page.last_id, pages + 1
        assert len(seen) <= total
    writer.join()
    assert seen == list(range(total))
    page = store.log_page("sinkjob", 0, limit=100)
    levels = json.loads(page.levels)  # the few lines not INFO keep their level
    assert levels == [3 if i % 7 == 0 else 1 for i in range(100)]
    assert pages > total // 7_777  # it read in many pages, while writing went on


def test_job_logs_is_a_view_read_afresh_with_tail_text_and_node(
    bt: Client, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    wire = submit(
        client,
        project,
        ['echo "node $BT_NODE_RANK"', "echo WARNING: careful"],
        compute=spec.Compute(node_count=2),
    )
    job = bt.job(wire.id)
    assert wait_terminal(client, wire).status == S.COMPLETED
    log = job.logs()
    assert job.id in repr(log)
    assert "tail" in repr(log)
    lines = list(log)
    assert list(log) == lines  # iterating again reads it again
    first = lines[0]
    assert isinstance(first, LogLine)
    assert first.node is None
    assert first.replica is None
    node_1 = list(job.logs(node=1))
    assert [(line.message, line.replica, line.level) for line in node_1] == [
        ("node 1", "1", "INFO"),
        ("WARNING: careful", "1", "WARNING"),
    ]
    assert log.tail(2) == lines[-2:]
    assert log.tail(0) == []
    assert log.text().splitlines()[-1].endswith("Job COMPLETED")
    # the same lines as Baseten's window API gives, field for field
    windowed = list(client.all_logs(project.id, wire.id))
    assert [LogLine.of(line) for line in windowed] == lines


def test_bulk_read_refuses_cursors_and_limits_it_cannot_use(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    first = submit(client, project, ["echo one"])
    other = submit(client, project, ["echo two"])
    wait_terminal(client, first)
    wait_terminal(client, other)
    foreign = client.log_page(project.id, other.id).last
    path = f"/v1/local/training_projects/{project.id}/jobs/{first.id}/logs"
    bad = [
        ("lines", {"after": foreign}, "not a position in job"),
        ("lines", {"before": foreign}, "not a position in job"),
        ("follow", {"cursor": foreign}, "not a position in job"),
        ("lines", {"after": -1}, "after must be between 0"),
        ("lines", {"limit": 0}, "limit must be between 1 and 100000"),
        ("lines", {"limit": 10**12}, "limit must be between 1 and 100000"),
        ("lines", {"limit": "lots"}, "limit must be an integer"),
        ("lines", {"after": 0, "before": "end"}, "not both"),
        ("lines", {"wait": 3600}, "wait must be between 0 and 60"),
        ("lines", {"node": -2}, "node must be between 0"),
    ]
    for endpoint, params, message in bad:
        response = client._http.get(f"{path}/{endpoint}", params=params)
        assert response.status_code == 422, (params, response.text)
        assert message in response.json()["message"], (params, response.text)
    # a reversed time window on Baseten's own endpoint: one line, no 500
    reversed_window = client._http.get(
        path.replace("/v1/local/", "/v1/"),
        params={"start_epoch_millis": 2000, "end_epoch_millis": 1000},
    )
    assert reversed_window.status_code == 400
    assert "is after end_epoch_millis" in reversed_window.json()["message"]


def test_the_sidebar_reads_the_tail_then_back_to_the_first_line(
    bt: Client, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    wire = submit(client, project, ["python -c \"print('\\n'.join(map(str, range(1234))))\""])
    assert wait_terminal(client, wire).status == S.COMPLETED
    page = panel_logs.read(bt, wire.id, panel_logs.LogQuery(tail=500))
    shown = [line["message"] for line in page["logs"]]
    assert shown[-1].startswith("Job COMPLETED")
    assert len(shown) == 500
    earlier, pages = page["earlier"], 1
    while earlier:
        back = panel_logs.read(bt, wire.id, panel_logs.LogQuery(tail=500, before=earlier))
        assert back["cursor"] == ""  # a read back does not move the follow cursor
        shown = [line["message"] for line in back["logs"]] + shown
        earlier, pages = back["earlier"], pages + 1
    messages = [line.message for line in bt.job(wire.id).logs()]
    assert shown == messages
    assert pages == 3
    # the follow goes on from the tail's cursor, with nothing new: done
    after = panel_logs.read(bt, wire.id, panel_logs.LogQuery(cursor=page["cursor"]))
    assert after["logs"] == []
    assert after["done"] is True
    for cursor in ("L0", "Lx", "B1.2", "../1"):
        with pytest.raises(BadRequest, match="invalid log cursor"):
            panel_logs.read(bt, wire.id, panel_logs.LogQuery(before=cursor))


def test_output_without_line_ends_long_lines_and_carriage_returns(
    bt: Client, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    script = """
import sys, time
sys.stdout.write("half a "); sys.stdout.flush(); time.sleep(0.3)
sys.stdout.write("line\\r\\nprogress 1\\rprogress 2\\r\\n"); sys.stdout.flush()
sys.stdout.write("x" * (64 * 1024 + 10) + "\\n")
sys.stdout.write("no line end at exit")
"""
    wire = submit(client, project, ["python out.py"], {"out.py": script})
    assert wait_terminal(client, wire).status == S.COMPLETED
    messages = [line.message for line in bt.job(wire.id).logs(node=0)]
    assert messages == [
        "half a line",
        "progress 1\rprogress 2",
        "x" * 64 * 1024,
        "x" * 10,
        "no line end at exit",
    ]


def test_a_follow_returns_when_its_job_ends(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    """The bulk read's long-poll answers when a line arrives, and at once (``done``)
    when the job has ended with nothing new."""
    wire = submit(client, project, ["sleep 0.5"])
    page = client.log_page(project.id, wire.id, wait=20)
    assert page.count >= 1
    wait_terminal(client, wire)
    lines = list(client.read_log(project.id, wire.id, after=page.last, follow=True))
    assert lines[-1].message.startswith("Job COMPLETED")
    rest = client.log_page(project.id, wire.id, after=page.last, wait=20)
    assert rest.done
    assert rest.count == len(lines)
    started = time.monotonic()
    end = client.log_page(project.id, wire.id, after=rest.last, wait=20)
    assert (end.count, end.done, end.last) == (0, True, rest.last)
    assert time.monotonic() - started < 10, "an ended job's long-poll waited for lines"


def test_a_page_of_lines_stamped_out_of_order_ends_where_its_order_says(
    local_home: Home,
) -> None:
    """Lines an older service (or a hand) stamped out of order still page exactly, in
    order of (time, id); a level or node no reader knows is read, not fatal."""
    store = Store(local_home.db)
    job = "odd-order"
    stamped = [(300, 1, "c"), (100, 1, "a"), (200, "WARN", "b"), (300, 9, "d"), (50, 1, "z")]
    with closing(sqlite3.connect(local_home.db)) as db, db:
        db.executemany(
            "INSERT INTO logs (job_id, ts_ns, node, level, message) VALUES (?, ?, 0, ?, ?)",
            [(job, ts, level, message) for ts, level, message in stamped],
        )
    read, cursor = [], 0
    while True:
        page = store.log_page(job, cursor, limit=2)
        if not page.count:
            break
        read += json.loads(page.messages)
        assert page.last_id is not None
        cursor = page.last_id
    assert read == ["z", "a", "b", "c", "d"]
    back = store.log_page(job, before_id=MAX_ID, limit=2)
    assert json.loads(back.messages) == ["c", "d"]
    assert back.first_id is not None
    earlier = store.log_page(job, before_id=back.first_id, limit=10)
    assert json.loads(earlier.messages) == ["z", "a", "b"]
    as_sent = log_page_json(back, back.last_id, "TRAINING_JOB_COMPLETED", True).encode()
    lines = list(LogPage.parse(as_sent).lines())
    assert [(line.message, line.level) for line in lines] == [("c", "INFO"), ("d", "INFO")]
