"""Follow across service restarts: lines printed vs lines a follower and a widget got.

A job prints ``line 0`` .. ``line N-1`` in bursts; ``client.follow_logs`` (every line)
and a ``JobWidget`` (tail mode: the newest lines plus a count) follow it in threads of
this process. A third of the way through, the service is stopped (``daemon.stop``) and
started again on a new port; two thirds through, it is killed (SIGKILL) and the client
starts it again itself. The figure: the follower's line count, which must equal the
lines printed, in order, with no duplicate; the widget's count must equal the lines
stored. Also printed: the longest wait for a line after each restart began.

    .venv/bin/python bench/restart_follow.py [--lines 6000]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import threading
import time

from _common import bench_service, fmt_s, goal, header, job_spec, table, wait_terminal

from bt_jupyter.jobs import Client
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.widgets.job import JobWidget
from tests.helpers import wait_for

SCRIPT = """
import sys, time
n, pause = int(sys.argv[1]), float(sys.argv[2])
for i in range(n):
    print(f"line {i}", flush=True)
    if i % 100 == 99:
        time.sleep(pause)
"""


#: The longest wait between two lines is looked for this long after a restart began.
STALL_WINDOW_S = 30.0


class Follower(threading.Thread):
    """Keeps every node line of ``client.follow_logs`` and when each arrived."""

    def __init__(self, client: Client, project_id: str, job_id: str) -> None:
        super().__init__(daemon=True)
        self.client, self.project_id, self.job_id = client, project_id, job_id
        self.lines: list[str] = []
        self.arrived: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for followed in self.client.api.follow_logs(self.project_id, self.job_id):
                if followed.log.replica == "0":
                    self.lines.append(followed.log.message)
                    self.arrived.append(time.monotonic())
        except BaseException as exc:  # reported below
            self.error = exc


def _restart(home: Home, how: str) -> float:
    """Take the service down ``how``; start it again on a new port after a graceful stop
    (after a SIGKILL the followers' client starts it). When it went down."""
    old = daemon.status(home)
    assert old is not None
    down = time.monotonic()
    if how == "sigkill":
        os.kill(old.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(old.pid, 0)
    else:
        daemon.stop(home)
        daemon.ensure_running(home)
    return down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=6000, help="lines the job prints")
    parser.add_argument("--seconds", type=float, default=20.0, help="over about this long")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    n = args.lines
    pause = args.seconds / max(1, n // 100)
    header(
        "follow across service restarts: lines printed vs lines followed",
        f"{n} lines over ~{args.seconds:.0f} s; a graceful stop and start at {n // 3}, "
        f"a SIGKILL at {2 * n // 3}",
    )
    with bench_service(keep=args.keep) as bench:
        client = Client.local(bench.home.root)
        artifacts = bench.upload({"count.py": SCRIPT})
        wire = client.api.create_job(
            bench.project.id,
            job_spec([f"python count.py {n} {pause}"], "restart-follow"),
            artifacts,
        )
        follower = Follower(client, bench.project.id, wire.id)
        follower.start()
        widget = JobWidget(client.job(wire.id))
        downs: list[tuple[str, float, int]] = []
        for how, at in (("graceful", n // 3), ("sigkill", 2 * n // 3)):
            wait_for(lambda at=at: len(follower.lines) >= at, 120, f"{at} lines followed")
            downs.append((how, _restart(bench.home, how), len(follower.lines)))
        follower.join(180)
        assert widget.watcher is not None
        wait_for(widget.watcher.followed.is_set, 120, "the widget to follow to the end")
        widget.watcher.join(30)
        done = wait_terminal(client.api, wire)
        stored = list(client.api.all_logs(bench.project.id, wire.id))
        client.close()

    if follower.error is not None:
        print(f"follower failed: {type(follower.error).__name__}: {follower.error}")
    expected = [f"line {i}" for i in range(n)]
    rows = []
    for how, down, seen in downs:
        around = [down, *(t for t in follower.arrived if down < t < down + STALL_WINDOW_S)]
        gaps = [b - a for a, b in itertools.pairwise(around)]
        stall = fmt_s(max(gaps)) if gaps else "n/a (the job had ended)"
        rows.append([how, seen, stall])
    table(["restart", "lines followed before it", "longest wait for a line after it"], rows)
    counted = len(follower.lines)
    exact = follower.lines == expected
    print(f"job ended {done.status.short}; {len(stored)} lines stored (node and runner)")
    print(f"widget log_count {widget.log_count} of {len(stored)} stored lines")
    goal(
        "follower line count across 2 restarts",
        f"{counted} of {n} printed"
        + ("" if exact else f" (duplicates: {counted - len(set(follower.lines))})"),
        "== printed, in order, no duplicate",
        exact,
    )
    goal(
        "widget line count across 2 restarts",
        f"{widget.log_count} of {len(stored)}",
        "== lines stored",
        widget.log_count == len(stored),
    )


if __name__ == "__main__":
    main()
