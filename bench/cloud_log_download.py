"""Cloud log download: a finished job's whole log through Baseten's time-window log API,
one page after another vs many windows at a time.

The local service runs as Baseten's stand-in (baseten mode) with each log request held
``--latency`` s (``BT_JUPYTER_SERVICE_LOG_LATENCY_S``), the cloud's round trip. A job
prints ``--lines`` lines as fast as it can; then ``client.all_logs`` reads its whole log
with ``concurrency=1`` (sequential paging, the algorithm before windows) and with
``--concurrency`` windows at a time, alternately, ``--repeat`` times each. Every read is
checked against the store: the same lines in the same order (timestamp, then arrival),
none twice.

    .venv/bin/python bench/cloud_log_download.py [--lines 100000] [--latency 0.1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import httpx
import psutil
from _common import bench_service, emitter_job, fmt_s, goal, header, table

from bt_jupyter import api
from bt_jupyter.client import ApiClient
from bt_jupyter.local import daemon
from bt_jupyter.local.store import Store

#: The stand-in's default delay of every third line (baseten mode): wait it out.
LATE_S = 1.5
Key = tuple[str, str, str | None]


class Counting(httpx.HTTPTransport):
    """Counts the log window requests a read sends."""

    def __init__(self) -> None:
        super().__init__()
        self.log_requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            self.log_requests += 1
        return super().handle_request(request)


def keys(lines: list[api.LogV1]) -> list[Key]:
    return [(x.timestamp, x.message, x.replica) for x in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000, help="lines the job prints")
    parser.add_argument("--latency", type=float, default=0.1, help="s per log request")
    parser.add_argument("--repeat", type=int, default=3, help="reads of each kind")
    parser.add_argument("--concurrency", type=int, default=8, help="windows at a time")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    n, width = args.lines, args.concurrency

    header(
        f"cloud log download: {n:,} lines, {args.latency * 1000:.0f} ms per log request",
        f"client.all_logs, concurrency=1 (sequential pages) vs {width} windows at a time; "
        f"baseten mode; {args.repeat} reads each, alternating",
    )
    os.environ["BT_JUPYTER_SERVICE_MODE"] = "baseten"
    os.environ["BT_JUPYTER_SERVICE_LOG_LATENCY_S"] = str(args.latency)
    with bench_service(keep=args.keep) as bench:
        project, home = bench.project, bench.home
        job, _ = emitter_job(bench, n, "log-download-bench")
        rows = Store(home.db).logs(job.id, limit=n + 10_000)  # by ts_ns, then arrival
        stored = [(str(r.ts_ns), r.message, str(r.node) if r.node is not None else None)
                  for r in rows]  # fmt: skip
        span_ms = (rows[-1].ts_ns - rows[0].ts_ns) / 1e6
        busiest = max(
            sum(1 for _ in group)
            for _, group in itertools.groupby(r.ts_ns // 1_000_000 for r in rows)
        )
        # every third line reaches the log API LATE_S after its timestamp
        time.sleep(max(0.0, rows[-1].ts_ns / 1e9 + LATE_S + 0.1 - time.time()))

        info = daemon.status(home)
        assert info is not None
        transport = Counting()
        service = psutil.Process(info.pid)
        timings: dict[int, list[float]] = {1: [], width: []}
        service_cpu: dict[int, list[float]] = {1: [], width: []}
        client_cpu: dict[int, list[float]] = {1: [], width: []}
        requests: dict[int, int] = {}
        problems: list[str] = []
        with ApiClient(info.url, info.api_key, transport=transport) as reader:
            for _ in range(args.repeat):
                for concurrency in (1, width):
                    transport.log_requests = 0
                    cpu, own = sum(service.cpu_times()[:2]), time.process_time()
                    started = time.perf_counter()
                    got = list(reader.all_logs(project.id, job.id, concurrency=concurrency))
                    timings[concurrency].append(time.perf_counter() - started)
                    service_cpu[concurrency].append(sum(service.cpu_times()[:2]) - cpu)
                    client_cpu[concurrency].append(time.process_time() - own)
                    requests[concurrency] = transport.log_requests
                    problems += check(keys(got), stored, f"concurrency={concurrency}")

    sequential, windowed = (statistics.median(timings[c]) for c in (1, width))
    ratio = sequential / windowed
    node_lines = sum(1 for k in stored if k[2] is not None)
    print(
        f"job: {n:,} lines printed, {len(stored):,} stored ({len(stored) - node_lines} "
        f"runner lines) over {span_ms:,.0f} ms, at most {busiest} in one millisecond\n"
    )
    table(
        ["read", "median", "min", "max", "log requests", "lines/s", "service CPU", "client CPU"],
        [
            [
                label,
                fmt_s(statistics.median(timings[c])),
                fmt_s(min(timings[c])),
                fmt_s(max(timings[c])),
                f"{requests[c]:,}",
                f"{len(stored) / statistics.median(timings[c]):,.0f}",
                fmt_s(statistics.median(service_cpu[c])),
                fmt_s(statistics.median(client_cpu[c])),
            ]
            for label, c in (("sequential (concurrency=1)", 1), (f"windowed ({width})", width))
        ],
    )
    print(
        "CPU: the stand-in's and this process's CPU time during a read (medians). The\n"
        "stand-in is one Python process: when its CPU nears the read's time (or both share\n"
        "too few cores), the machine, not the latency, is the limit.\n"
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")
    goal(
        "lines stored",
        f"{node_lines:,} node lines",
        f"exactly {n:,}",
        node_lines == n,
    )
    goal(
        "every read equals the store",
        f"{2 * args.repeat - len(problems)} of {2 * args.repeat} reads: count, order "
        "(timestamp, then arrival), no duplicate",
        "all",
        not problems,
    )
    goal(
        f"windowed ({width}) vs sequential",
        f"{fmt_s(windowed)} vs {fmt_s(sequential)}: {ratio:.1f}x faster",
        ">= 4x",
        ratio >= 4,
    )


def check(got: list[Key], stored: list[Key], what: str) -> list[str]:
    """What is wrong with one read, compared with the store's lines in order."""
    found = []
    if len(got) != len(stored):
        found.append(f"{what}: {len(got):,} lines, the store holds {len(stored):,}")
    doubled = (len(got) - len(set(got))) - (len(stored) - len(set(stored)))
    if doubled:
        found.append(f"{what}: {doubled:,} duplicate lines")
    if any(int(a[0]) > int(b[0]) for a, b in itertools.pairwise(got)):
        found.append(f"{what}: not in timestamp order")
    if not found and got != stored:
        found.append(f"{what}: differs from the store's order (timestamp, then arrival)")
    return found


if __name__ == "__main__":
    main()
