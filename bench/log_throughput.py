"""Log throughput: a job printing a million lines as fast as it can, stored, read back.

(a) Store: the emitter's own clock alone (its 1 MiB pipe read and dropped) and as a
    job, with the time it waited for a CPU or on its pipe; lines stored per second
    (RUNNING -> COMPLETED, every line in SQLite by then).
(b) Read back through the public API, in a fresh process whose peak RSS is reported:
    ``job.logs()`` iterated to the end, and ``job.logs(follow=True)`` from the start.
(c) The Training sidebar's log path (a real Jupyter Server's ``/bt-jupyter`` extension):
    the newest 500 lines, then a page back in history.
(d) Baseten's own ``truss train logs`` against the same service (port 8000), side by
    side with ``job.logs()``.

    .venv/bin/python bench/log_throughput.py [--lines 1000000] [--runs 3] [--no-truss]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    EMITTER,
    REPO,
    Bench,
    S,
    bench_service,
    emitter_job,
    fmt_s,
    goal,
    header,
    history_times,
    median,
    node_line_count,
    table,
)

from bt_jupyter import api
from tests.helpers import RESOLVER

#: Run in a fresh interpreter: reads the job's log through the public API, prints JSON.
READER = """
import json, resource, sys, time
from pathlib import Path
from bt_jupyter import Client
home, job_id, mode = sys.argv[1], sys.argv[2], sys.argv[3]
with Client.local(Path(home)) as client:
    job = client.job(job_id)
    start = time.perf_counter()
    count, last = 0, 0
    ordered = True
    for line in job.logs(follow=mode == "follow"):
        count += 1
        ordered &= line.timestamp >= last
        last = line.timestamp
    seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"count": count, "seconds": seconds, "rss_mb": rss, "ordered": ordered}))
"""

#: The barest reader of a job's output: the runner's pipe size, every byte dropped.
DRAIN = """
import fcntl, os
fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 1 << 20)
buffer = bytearray(1 << 20)
while os.readv(0, [buffer]):
    pass
"""
TRUSS_PORT = 8000
GOAL_READ = 500_000
GOAL_STORE = 200_000
GOAL_THROTTLE = 0.03
GOAL_RSS_MB = 200
GOAL_SIDEBAR_S = 0.1


def rate(lines: int, seconds: float) -> str:
    return f"{lines / seconds:,.0f} lines/s" if seconds > 0 else "n/a"


def emit_alone(n: int) -> dict[str, float]:
    """The emitter's own figures without a runner: its output goes to the barest reader,
    a 1 MiB pipe (the runner's size) read and dropped. (Straight to /dev/null it runs
    faster still: the kernel then copies nothing, which no log collector can offer.)"""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "emit.py").write_text(EMITTER)
        Path(folder, "drain.py").write_text(DRAIN)
        subprocess.run(
            f"{sys.executable} emit.py {n} | {sys.executable} drain.py",
            shell=True,
            cwd=folder,
            check=True,
        )
        return dict(json.loads(Path(folder, "emit_stats.json").read_text()))


def store_run(bench: Bench, n: int) -> tuple[api.TrainingJobV1, dict[str, float], float]:
    """One job: (job, its own figures, RUNNING -> COMPLETED)."""
    job, stats = emitter_job(bench, n, "throughput-bench")
    at = history_times(bench.client, job)
    return job, stats, at[S.COMPLETED] - at[S.RUNNING]


def read_in_child(bench: Bench, job_id: str, mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", READER, str(bench.home.root), job_id, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=600,
    )
    return dict(json.loads(done.stdout))


def sidebar(bench: Bench, job_id: str, runs: int) -> tuple[float, float, int]:
    """Medians of the tail request and of a page back, through a real Jupyter Server."""
    import httpx

    from tests.browser import jupyter

    tails, backs, shown = [], [], 0
    with (
        jupyter("jupyter_server", bench.home, bench.home.root) as (base, token),
        httpx.Client(
            base_url=f"{base}/bt-jupyter", headers={"Authorization": f"token {token}"}, timeout=60
        ) as http,
    ):
        for _ in range(runs):
            start = time.perf_counter()
            page = http.get(f"/jobs/{job_id}/logs", params={"tail": 500}).raise_for_status()
            tails.append(time.perf_counter() - start)
            earlier = page.json()["earlier"]
            start = time.perf_counter()
            back = http.get(f"/jobs/{job_id}/logs", params={"tail": 500, "before": earlier})
            backs.append(time.perf_counter() - start)
            shown = len(page.json()["logs"]) + len(back.raise_for_status().json()["logs"])
    return median(tails), median(backs), shown


def truss_logs(bench: Bench, job_id: str) -> tuple[float, int]:
    """``truss train logs --job-id`` to the end: (seconds, lines printed of the job)."""
    truss = Path(sys.executable).parent / "truss"
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "sitecustomize.py").write_text(RESOLVER)
        Path(folder, "trussrc").write_text(
            "[bt-local]\nremote_provider = baseten\n"
            f"api_key = {bench.home.api_key()}\nremote_url = http://localhost:{TRUSS_PORT}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASETEN_")}
        env |= {"USER_TRUSSRC_PATH": f"{folder}/trussrc", "PYTHONPATH": folder}
        command = [str(truss), "train", "logs", "--job-id", job_id, "--remote", "bt-local"]
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "--non-interactive"], env=env, capture_output=True, timeout=1800
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"truss train logs failed: {done.stderr.decode()[-2000:]}")
    return seconds, done.stdout.count(b"step=")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines to print")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure (medians)")
    parser.add_argument("--no-truss", action="store_true", help="skip truss train logs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    n, runs = args.lines, args.runs
    with_truss = not args.no_truss and port_free(TRUSS_PORT)
    header(
        f"log throughput: {n:,} lines printed as fast as possible, stored, read back",
        f"medians of {runs} runs; reads in a fresh process through Job.logs()",
    )
    with bench_service(keep=args.keep, port=TRUSS_PORT if with_truss else 0) as bench:
        # alone and as a job in turn: the machine's drift affects both alike
        alone_s, stored = [], []
        for _ in range(runs):
            alone_s.append(emit_alone(n))
            stored.append(store_run(bench, n))
        alone = median([a["wall"] for a in alone_s])
        job = stored[-1][0]
        in_job, store_s = median([s[1]["wall"] for s in stored]), median([s[2] for s in stored])
        # each run against the run alone just before it: the machine's drift cancels
        pairs = zip(alone_s, stored, strict=True)
        throttle = median([s[1]["wall"] / a["wall"] for a, s in pairs]) - 1
        lost = {
            kind: median([s[1][kind] / s[1]["wall"] for s in stored])
            for kind in ("cpu_wait", "pipe_wait")
        }
        counts = [node_line_count(bench.home, s[0].id) for s in stored]
        reads = {
            mode: [read_in_child(bench, job.id, mode) for _ in range(runs)]
            for mode in ("all", "follow")
        }
        tail_s, back_s, shown = sidebar(bench, job.id, max(runs, 10))
        truss = truss_logs(bench, job.id) if with_truss else None

    total = reads["all"][0]["count"]  # the job's lines and the runner's own
    read_s = {mode: median([r["seconds"] for r in rs]) for mode, rs in reads.items()}
    rss = max(r["rss_mb"] for rs in reads.values() for r in rs)
    exact = all(r["count"] == total and r["ordered"] for rs in reads.values() for r in rs)
    rows = [
        ["emitter alone (its own clock)", fmt_s(alone), f"{n:,}", rate(n, alone)],
        ["emitter as a job (its own clock)", fmt_s(in_job), f"{n:,}", rate(n, in_job)],
        ["RUNNING -> COMPLETED (all stored)", fmt_s(store_s), f"{n:,}", rate(n, store_s)],
        ["job.logs() to the end", fmt_s(read_s["all"]), f"{total:,}", rate(total, read_s["all"])],
        [
            "job.logs(follow=True) from start",
            fmt_s(read_s["follow"]),
            f"{total:,}",
            rate(total, read_s["follow"]),
        ],
        ["sidebar: newest 500 lines", fmt_s(tail_s), "500", ""],
        ["sidebar: 500 lines further back", fmt_s(back_s), "500", ""],
    ]
    if truss is not None:
        rows.append(
            ["truss train logs (1 run)", fmt_s(truss[0]), f"{truss[1]:,}", rate(truss[1], truss[0])]
        )
    table(["phase", "median", "lines", "rate"], rows)
    print(f"reader peak RSS (largest of {2 * runs} processes): {rss:.0f} MB\n")
    goal(
        "lines stored",
        f"{counts} node lines per job",
        f"exactly {n:,} each",
        all(c == n for c in counts),
    )
    goal(
        "store throughput",
        rate(n, store_s),
        f">= {GOAL_STORE:,} lines/s",
        n / store_s >= GOAL_STORE,
    )
    goal(
        "job slowed by the runner",
        f"{throttle * 100:+.1f}% (median of {runs} runs, each against the emitter alone "
        f"just before; medians {fmt_s(in_job)} vs {fmt_s(alone)})",
        f"<= {GOAL_THROTTLE * 100:.0f}%",
        throttle <= GOAL_THROTTLE,
    )
    goal(
        "  of which the job waited on the runner",
        f"{(lost['cpu_wait'] + lost['pipe_wait']) * 100:.1f}% of its time (for a CPU "
        f"{lost['cpu_wait'] * 100:.1f}%, on a full pipe {lost['pipe_wait'] * 100:.1f}%: "
        "its own schedstat, free of the machine's drift)",
        f"<= {GOAL_THROTTLE * 100:.0f}%",
        lost["cpu_wait"] + lost["pipe_wait"] <= GOAL_THROTTLE,
    )
    for mode, what in (("all", "job.logs()"), ("follow", "job.logs(follow=True)")):
        speed = total / read_s[mode]
        goal(
            f"{what} read back",
            rate(total, read_s[mode]),
            f">= {GOAL_READ:,} lines/s",
            speed >= GOAL_READ,
        )
    goal("reads exact and in order", f"{total:,} lines each run", "same count, ascending", exact)
    goal("reader memory", f"peak RSS {rss:.0f} MB", f"< {GOAL_RSS_MB} MB", rss < GOAL_RSS_MB)
    goal(
        "sidebar tail and page back",
        f"{fmt_s(tail_s)} and {fmt_s(back_s)} ({shown} lines)",
        f"<= {GOAL_SIDEBAR_S * 1000:.0f} ms each",
        max(tail_s, back_s) <= GOAL_SIDEBAR_S and shown == 1000,
    )
    if truss is not None:
        goal(
            "job.logs() vs truss train logs",
            f"{fmt_s(read_s['all'])} vs {fmt_s(truss[0])}: {truss[0] / read_s['all']:.0f}x faster; "
            f"truss printed {truss[1]:,} of the {n:,} lines",
            "reported",
            None,
        )
    else:
        print(f"(truss train logs skipped: --no-truss, or port {TRUSS_PORT} in use)")


if __name__ == "__main__":
    main()
