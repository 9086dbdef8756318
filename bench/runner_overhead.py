"""Runner overhead: a CPU-bound script run directly vs as a job on the local service.

The script is a fixed pure-Python loop (calibrated here to ``--seconds``, ~3 s) that
prints a line every ~10 ms and, last, its own elapsed time.
(a) direct: ``subprocess.Popen`` with stdout to a pipe that is drained; wall time from
    the start of ``Popen`` to the process's exit.
(b) job: the same script as a job; RUNNING -> COMPLETED from the status history.
The two alternate ``--repeat`` times each; the figure is the ratio of the medians, b/a.
The script's own elapsed time separates CPU contention (the script itself slowed down)
from fixed per-job costs (start, supervision, final flush).

    .venv/bin/python bench/runner_overhead.py [--repeat 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    Bench,
    S,
    bench_service,
    fmt_s,
    goal,
    header,
    history_times,
    job_spec,
    median,
    table,
    wait_terminal,
)

GOAL_RATIO = 1.03
CHUNK_SECONDS = 0.01

WORK = """
import sys, time
chunks, iters = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
acc = 0
for chunk in range(chunks):
    for i in range(iters):
        acc = (acc * 31 + i) % 1000003
    print(f"chunk {chunk} acc={acc}", flush=True)
print(f"done {time.perf_counter() - start:.6f}", flush=True)
"""


def direct(script: Path, chunks: int, iters: int) -> tuple[float, float]:
    """(wall seconds, the script's own seconds) for a run under ``subprocess``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(chunks), str(iters)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    last = b""
    for line in proc.stdout:
        last = line
    if proc.wait() != 0:
        raise RuntimeError(f"direct run exited {proc.returncode}")
    wall = time.perf_counter() - started
    return wall, float(last.split()[1])


def as_job(bench: Bench, chunks: int, iters: int) -> tuple[float, float]:
    """(RUNNING -> COMPLETED seconds, the script's own seconds) for a run as a job."""
    client, project = bench.client, bench.project
    artifacts = bench.upload({"work.py": WORK})
    job = client.create_job(
        project.id, job_spec([f"python work.py {chunks} {iters}"], name="overhead-bench"), artifacts
    )
    done = wait_terminal(client, job, every=0.25)
    if done.status != S.COMPLETED:
        raise RuntimeError(f"job ended {done.status.short}: {done.error_message}")
    at = history_times(client, job)
    own = [line.message for line in client.all_logs(project.id, job.id) if line.replica]
    return at[S.COMPLETED] - at[S.RUNNING], float(own[-1].split()[1])


def calibrate(script: Path, seconds: float) -> tuple[int, int]:
    """(chunks, iterations per chunk) so that a chunk takes ~10 ms, the run ``seconds``."""
    probe_chunks, probe_iters = 20, 50_000
    own = min(direct(script, probe_chunks, probe_iters)[1] for _ in range(3))
    per_iter = own / (probe_chunks * probe_iters)
    return round(seconds / CHUNK_SECONDS), max(1, round(CHUNK_SECONDS / per_iter))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each kind (alternating)")
    parser.add_argument("--seconds", type=float, default=3.0, help="target length of one run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    direct_runs: list[tuple[float, float]] = []
    job_runs: list[tuple[float, float]] = []
    with bench_service(keep=args.keep) as bench:
        script = bench.home.root / "work.py"
        script.write_text(WORK)
        chunks, iters = calibrate(script, args.seconds)
        header(
            "runner overhead: CPU-bound script, direct subprocess vs local job",
            f"{chunks} chunks x {iters:,} iterations (~{CHUNK_SECONDS * 1000:.0f} ms each, one "
            f"line each), {args.repeat} runs of each, alternating, after one warm-up of each",
        )
        direct(script, chunks // 10, iters)  # warm-up
        as_job(bench, chunks // 10, iters)
        for _ in range(args.repeat):
            direct_runs.append(direct(script, chunks, iters))
            job_runs.append(as_job(bench, chunks, iters))

    rows = []
    for n, (a, b) in enumerate(zip(direct_runs, job_runs, strict=True), 1):
        rows.append(
            [str(n), fmt_s(a[0]), fmt_s(a[1]), fmt_s(b[0]), fmt_s(b[1]), f"{b[0] / a[0]:.3f}"]
        )
    da, db = median([r[0] for r in direct_runs]), median([r[0] for r in job_runs])
    oa, ob = median([r[1] for r in direct_runs]), median([r[1] for r in job_runs])
    rows.append(["median", fmt_s(da), fmt_s(oa), fmt_s(db), fmt_s(ob), f"{db / da:.3f}"])
    table(
        [
            "run",
            "(a) direct wall",
            "(a) script's own",
            "(b) job RUNNING->COMPLETED",
            "(b) script's own",
            "b/a",
        ],
        rows,
    )
    print(
        f"job - direct: {fmt_s(db - da)} per run, of which the script itself ran "
        f"{fmt_s(ob - oa)} longer as a job ({ob / oa:.3f}x)\n"
    )
    goal(
        "runner overhead b/a",
        f"{db / da:.3f}x (direct {fmt_s(da)}, job {fmt_s(db)}, medians of {len(job_runs)})",
        f"<= {GOAL_RATIO:.2f}x",
        db / da <= GOAL_RATIO,
    )


if __name__ == "__main__":
    main()
