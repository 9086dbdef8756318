"""Log throughput: a job that prints a million lines, stored, then read back twice.

(a) Store: the job writes ``--lines`` short lines to stdout through a 1 MiB buffer; the
    figure is RUNNING -> COMPLETED from the status history, and lines stored per second.
    The count is verified in SQLite (lines with a node; the runner's own lines have none).
(b) Read back through ``client.all_logs`` (Baseten-style ascending windows) and
(c) through ``client.follow_logs`` from cursor 0 (the local long-poll), each timed and
    counted.

    .venv/bin/python bench/log_throughput.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from contextlib import closing

from _common import (
    S,
    bench_service,
    fmt_s,
    goal,
    header,
    history_times,
    job_spec,
    node_line_count,
    table,
    wait_terminal,
)

from bt_jupyter.local.store import Store

EMITTER = """
import sys, time
lines = int(sys.argv[1])
start = time.perf_counter()
out = open(1, "wb", buffering=1 << 20, closefd=False)
for base in range(0, lines, 10_000):
    end = min(lines, base + 10_000)
    chunk = "".join(f"line {i:07d} step={i} loss=0.{i % 9973:04d}\\n" for i in range(base, end))
    out.write(chunk.encode())
out.flush()
with open("emit_seconds.txt", "w") as f:
    f.write(str(time.perf_counter() - start))
"""


def rate(lines: int, seconds: float) -> str:
    return f"{lines / seconds:,.0f} lines/s" if seconds > 0 else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", "--repeat", type=int, default=1_000_000, help="lines to print")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    n = args.lines

    header(
        f"log throughput: {n:,} lines printed, stored, read back",
        "stored: RUNNING -> COMPLETED (status history); read: all_logs and follow_logs(cursor 0)",
    )
    with bench_service(keep=args.keep) as bench:
        client, project, home = bench.client, bench.project, bench.home
        artifacts = bench.upload({"emit.py": EMITTER})
        job = client.create_job(
            project.id, job_spec([f"python emit.py {n}"], name="throughput-bench"), artifacts
        )
        done = wait_terminal(client, job, timeout=600, every=0.5)
        if done.status != S.COMPLETED:
            raise RuntimeError(f"job ended {done.status.short}: {done.error_message}")
        at = history_times(client, job)
        store_s = at[S.COMPLETED] - at[S.RUNNING]
        emit_s = float((home.job_dir(job.id) / "work" / "emit_seconds.txt").read_text())
        stored = node_line_count(home, job.id)
        all_stored = Store(home.db).log_count(job.id)
        with closing(sqlite3.connect(f"file:{home.db}?mode=ro", uri=True)) as db:
            last_read_ns = db.execute(
                "SELECT MAX(ts_ns) FROM logs WHERE job_id = ? AND node IS NOT NULL", (job.id,)
            ).fetchone()[0]
        read_s = last_read_ns / 1e9 - at[S.RUNNING]
        db_bytes = sum(p.stat().st_size for p in home.root.glob("state.db*"))

        started = time.perf_counter()
        via_windows = sum(1 for line in client.all_logs(project.id, job.id) if line.replica)
        windows_s = time.perf_counter() - started

        started = time.perf_counter()
        via_follow = sum(
            1 for f in client.follow_logs(project.id, job.id, cursor=0) if f.log.replica
        )
        follow_s = time.perf_counter() - started

    table(
        ["phase", "time", "lines (node)", "rate"],
        [
            ["job writes all lines (its own clock)", fmt_s(emit_s), f"{n:,}", rate(n, emit_s)],
            ["RUNNING -> last line read by runner", fmt_s(read_s), f"{n:,}", rate(n, read_s)],
            ["RUNNING -> COMPLETED (stored)", fmt_s(store_s), f"{stored:,}", rate(stored, store_s)],
            [
                "client.all_logs (windows)",
                fmt_s(windows_s),
                f"{via_windows:,}",
                rate(via_windows, windows_s),
            ],
            [
                "client.follow_logs (cursor 0)",
                fmt_s(follow_s),
                f"{via_follow:,}",
                rate(via_follow, follow_s),
            ],
        ],
    )
    print(
        f"store: {all_stored:,} rows for the job ({all_stored - stored} runner lines), "
        f"state.db + WAL {db_bytes / 2**20:.0f} MiB\n"
    )
    goal(
        "lines stored",
        f"{stored:,} node lines in SQLite",
        f"exactly {n:,}",
        stored == n,
    )
    goal("store throughput", rate(stored, store_s), "none set; tracked", None)
    goal(
        "all_logs read back",
        f"{via_windows:,} lines, {rate(via_windows, windows_s)}",
        f"exactly {n:,} lines; rate tracked",
        via_windows == n,
    )
    goal(
        "follow_logs read back",
        f"{via_follow:,} lines, {rate(via_follow, follow_s)}",
        f"exactly {n:,} lines; rate tracked",
        via_follow == n,
    )


if __name__ == "__main__":
    main()
