"""The job widget under a flood: a job prints 200,000 lines while the widget follows it.

Measured in-process (the widget's comm has no frontend here, so every publish is counted
at the source): the largest synced state, comm messages per second, how long a small
"cell" (a pure-Python loop of ~10 ms) takes on the main thread meanwhile, and the delay
from print() in the job to the line being in the widget's model.

Goals: state <= 1 MB, <= 10 messages/s, a cell returns in < 100 ms, print -> model p95
<= 500 ms. Run: .venv/bin/python bench/widget_stream.py [--lines 200000]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from _common import bench_service, fmt_s, goal, header, job_spec, median, p95, table

from bt_jupyter.jobs import Client, Job
from bt_jupyter.widgets.job import JobWidget

SCRIPT = """
import sys, time
n = int(sys.argv[1])
for i in range(n):
    print(f"{time.time_ns()} line {i}")
    if i % 2000 == 0:
        sys.stdout.flush()
        time.sleep(0.02)
"""


def small_cell() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(200_000):
        total += i * i
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    header("widget stream", f"{args.lines:,} lines followed by a JobWidget")
    baseline = median([small_cell() for _ in range(20)])
    with bench_service() as bench:
        client = Client(bench.client, "local", "bench")
        artifacts = bench.upload({"flood.py": SCRIPT})
        created = bench.client.create_job(
            bench.project.id,
            # -u: a job's image sets no PYTHONUNBUFFERED (packaged cells flush per line);
            # buffered output would measure the job's buffer, not the path to the widget
            job_spec([f"python -u flood.py {args.lines}"]),
            artifacts,
        )
        job = Job(client, created)
        delays: list[float] = []
        sizes: list[int] = []
        seen = {"seq": 0}

        def on_tail(change: dict[str, Any]) -> None:
            now = time.time_ns()
            for line in change["new"]:
                if line["seq"] > seen["seq"]:
                    seen["seq"] = line["seq"]
                    first = line["message"].split(" ", 1)[0]
                    if first.isdigit():
                        delays.append((now - int(first)) / 1e9)
            sizes.append(len(json.dumps(widget.get_state(), default=str)))

        started = time.monotonic()
        widget = JobWidget(job)
        assert widget.watcher is not None
        widget.observe(on_tail, names="log_tail")
        cells: list[float] = []
        while widget.watcher._threads[1].is_alive():
            cells.append(small_cell())
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        watcher = widget.watcher
        rate = watcher.messages / elapsed
        table(
            ["figure", "median", "p95", "max"],
            [
                [
                    "print -> widget model",
                    fmt_s(median(delays)),
                    fmt_s(p95(delays)),
                    fmt_s(max(delays)),
                ],
                [
                    "small cell meanwhile",
                    fmt_s(median(cells)),
                    fmt_s(p95(cells)),
                    fmt_s(max(cells)),
                ],
                ["small cell idle", fmt_s(baseline), "", ""],
            ],
        )
        print(f"lines {widget.log_count:,} in {elapsed:.1f} s; {watcher.messages} publishes")
        goal("widget state", f"max {max(sizes) / 1e6:.3f} MB", "<= 1 MB", max(sizes) <= 1_000_000)
        goal("comm messages", f"{rate:.1f}/s", "<= 10/s", rate <= 10)
        goal(
            "cell while streaming", f"max {max(cells) * 1000:.0f} ms", "< 100 ms", max(cells) < 0.1
        )
        goal("print -> model", f"p95 {p95(delays) * 1000:.0f} ms", "<= 500 ms", p95(delays) <= 0.5)


if __name__ == "__main__":
    main()
