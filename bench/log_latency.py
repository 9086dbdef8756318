"""Log latency: from a job's ``print`` to the line reaching ``client.follow_logs``.

The job (a Python script in the bundle) prints ``tick <seq> <time.time_ns()>`` every
``--interval`` seconds, flushing each line. The client follows from cursor 0 and, for each
line, takes its receive time minus the embedded send time. The split shows where the time
goes: send -> runner read (the line's stored timestamp is when the runner read it from the
pipe) and runner read -> client (batching into SQLite every 50 ms, the follow long-poll,
HTTP).

    .venv/bin/python bench/log_latency.py [--lines 300] [--interval 0.02]
"""

from __future__ import annotations

import argparse
import time

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

GOAL_P95_S = 0.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", "--repeat", type=int, default=300, help="lines to time")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    header(
        "log latency: print in the job -> line out of client.follow_logs",
        f"{args.lines} lines, one every {args.interval * 1000:.0f} ms, followed from cursor 0",
    )
    total: list[float] = []
    to_runner: list[float] = []
    to_client: list[float] = []
    batches: list[int] = []
    with bench_service(keep=args.keep) as bench:
        client, project = bench.client, bench.project
        artifacts = bench.upload({"ticker.py": TICKER})
        job = client.create_job(
            project.id,
            job_spec([f"python ticker.py {args.lines} {args.interval}"], name="latency-bench"),
            artifacts,
        )
        last_received = 0
        for followed in client.follow_logs(project.id, job.id):
            received = time.time_ns()
            line = followed.log
            if line.replica is None or not line.message.startswith("tick "):
                continue
            sent = int(line.message.split()[2])
            read = int(line.timestamp)
            total.append((received - sent) / 1e9)
            to_runner.append((read - sent) / 1e9)
            to_client.append((received - read) / 1e9)
            if received - last_received > 1_000_000:  # > 1 ms apart: a new response
                batches.append(0)
            batches[-1] += 1
            last_received = received
        done = wait_terminal(client, job)
        if done.status != S.COMPLETED:
            raise RuntimeError(f"job ended {done.status.short}: {done.error_message}")

    if len(total) != args.lines:
        print(f"WARNING: received {len(total)} of {args.lines} lines")
    rows = [
        [name, fmt_s(median(v)), fmt_s(p95(v)), fmt_s(max(v))]
        for name, v in (
            ("print -> runner read", to_runner),
            ("runner read -> client", to_client),
            ("print -> client (total)", total),
        )
    ]
    table(["segment", "median", "p95", "max"], rows)
    print(
        f"lines received: {len(total)} in {len(batches)} bursts "
        f"(median {median([float(b) for b in batches]):.0f} lines per burst)\n"
    )
    goal(
        "log latency print -> follow_logs",
        f"p95 {fmt_s(p95(total))}, median {fmt_s(median(total))}, max {fmt_s(max(total))} "
        f"over {len(total)} lines",
        f"p95 <= {GOAL_P95_S * 1000:.0f} ms",
        p95(total) <= GOAL_P95_S,
    )


if __name__ == "__main__":
    main()
