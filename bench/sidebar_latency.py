"""The Training sidebar's two requests, through a real Jupyter Server and its extension.

1. Log follow: a job prints ``tick <seq> <time.time_ns()>`` every ``--interval`` s; the
   job panel's request (``GET /bt-jupyter/jobs/{id}/logs?follow=1&cursor=...``) is made
   in a loop, as the panel does, and each line's receive time minus its send time kept.
2. The job list the sidebar polls (``GET /bt-jupyter/jobs``) with ``--jobs`` finished jobs
   in the project, timed ``--repeat`` times.

    .venv/bin/python bench/sidebar_latency.py [--lines 300] [--jobs 50] [--repeat 30]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from _common import (
    TICKER,
    S,
    bench_service,
    fmt_s,
    goal,
    header,
    job_spec,
    median,
    p95,
    table,
    wait_terminal,
)

from bt_jupyter.local.home import Home
from tests.browser import jupyter

GOAL_FOLLOW_P95_S = 0.3
GOAL_LIST_MEDIAN_S = 0.2


@contextmanager
def jupyter_server(home: Home) -> Iterator[httpx.Client]:
    """``jupyter server`` with the bt_jupyter extension, as JupyterLab runs it."""
    with (
        jupyter("jupyter_server", home, home.root) as (base, token),
        httpx.Client(
            base_url=f"{base}/bt-jupyter", headers={"Authorization": f"token {token}"}, timeout=60
        ) as http,
    ):
        yield http


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300, help="lines to time")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--jobs", type=int, default=50, help="finished jobs in the list")
    parser.add_argument("--repeat", type=int, default=30, help="timed job-list requests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    header(
        "sidebar: print -> job panel (server extension follow), and the job list",
        f"{args.lines} lines every {args.interval * 1000:.0f} ms; list of {args.jobs} jobs "
        f"x {args.repeat}",
    )
    latency: list[float] = []
    listing: list[float] = []
    with bench_service(keep=args.keep) as bench, jupyter_server(bench.home) as http:
        client, project = bench.client, bench.project
        for _ in range(args.jobs):
            done = client.create_job(project.id, job_spec(["true"]), None)
            wait_terminal(client, done)
        job = client.create_job(
            project.id,
            job_spec([f"python ticker.py {args.lines} {args.interval}"], name="sidebar-bench"),
            bench.upload({"ticker.py": TICKER}),
        )
        cursor, finished = "", False
        while not finished:
            page = http.get(
                f"/jobs/{job.id}/logs", params={"cursor": cursor, "follow": 1, "tail": 5000}
            ).json()
            received = time.time_ns()
            for line in page["logs"]:
                if line["message"].startswith("tick "):
                    latency.append((received - int(line["message"].split()[2])) / 1e9)
            cursor, finished = page["cursor"], page["done"]
        if wait_terminal(client, job).status != S.COMPLETED:
            raise RuntimeError("the ticker job did not complete")
        count = 0
        for _ in range(args.repeat):
            start = time.perf_counter()
            answer = http.get("/jobs", params={"project": project.name})
            listing.append(time.perf_counter() - start)
            count = len(answer.json()["jobs"])

    if len(latency) != args.lines:
        print(f"WARNING: received {len(latency)} of {args.lines} lines")
    table(
        ["request", "median", "p95", "max"],
        [
            ["print -> panel (logs?follow=1)", *map(fmt_s, _stats(latency))],
            [f"GET jobs ({count} jobs)", *map(fmt_s, _stats(listing))],
        ],
    )
    goal(
        "print -> job panel through the server extension",
        f"p95 {fmt_s(p95(latency))}, median {fmt_s(median(latency))} over {len(latency)} lines",
        f"p95 <= {GOAL_FOLLOW_P95_S * 1000:.0f} ms",
        p95(latency) <= GOAL_FOLLOW_P95_S,
    )
    goal(
        "sidebar job list",
        f"median {fmt_s(median(listing))}, p95 {fmt_s(p95(listing))} for {count} jobs",
        f"median <= {GOAL_LIST_MEDIAN_S * 1000:.0f} ms",
        median(listing) <= GOAL_LIST_MEDIAN_S,
    )


def _stats(values: list[float]) -> tuple[float, float, float]:
    return median(values), p95(values), max(values)


if __name__ == "__main__":
    main()
