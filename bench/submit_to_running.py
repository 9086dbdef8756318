"""Submit -> RUNNING latency on a warm local service (no requirements to install).

For each submission: the clock starts when ``client.create_job`` is called; RUNNING is
observed twice, (1) from the status history endpoint (the runner's own timestamp when it
set RUNNING) and (2) by polling ``client.job`` every ``--poll`` seconds from the client.
The job (``sleep 30``) is stopped once RUNNING is seen and awaited before the next one.

    .venv/bin/python bench/submit_to_running.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

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
    p95,
    table,
    wait_terminal,
)

GOAL_S = 0.5


def one(bench: Bench, poll: float, requests: list[float]) -> dict[str, float]:
    """One submission; appends each poll request's duration to ``requests``."""
    client, project = bench.client, bench.project
    t0 = time.time()
    job = client.create_job(project.id, job_spec(["sleep 30"], name="submit-bench"))
    returned = time.time()
    while True:
        asked = time.time()
        current = client.job(project.id, job.id).training_job
        seen = time.time()
        requests.append(seen - asked)
        if current.status == S.RUNNING:
            break
        if current.status.is_terminal:
            raise RuntimeError(
                f"job {job.id} ended {current.status.short}: {current.error_message}"
            )
        time.sleep(poll)
    client.stop_job(project.id, job.id)
    ended = wait_terminal(client, job, every=0.05)
    if ended.status != S.STOPPED:
        raise RuntimeError(f"job {job.id} ended {ended.status.short}, expected STOPPED")
    at = history_times(client, job)
    return {
        "create_job returned": returned - t0,
        "CREATED (stored)": at[S.CREATED] - t0,
        "CREATED -> DEPLOYING": at[S.DEPLOYING] - at[S.CREATED],
        "DEPLOYING -> RUNNING": at[S.RUNNING] - at[S.DEPLOYING],
        "RUNNING (history)": at[S.RUNNING] - t0,
        "RUNNING (polling)": seen - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="measured submissions")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured submissions first")
    parser.add_argument("--poll", type=float, default=0.01, help="client poll interval (s)")
    parser.add_argument("--gap", type=float, default=1.0, help="quiet seconds between jobs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    header(
        "submit -> RUNNING (warm, no requirements)",
        f"{args.repeat} submissions of `sleep 30` (stopped once RUNNING), "
        f"{args.warmup} warm-up, poll every {args.poll * 1000:.0f} ms, {args.gap}s between jobs",
    )
    runs: list[dict[str, float]] = []
    requests: list[float] = []
    with bench_service(keep=args.keep) as bench:
        for n in range(args.warmup + args.repeat):
            result = one(bench, args.poll, requests)
            if n >= args.warmup:
                runs.append(result)
            time.sleep(args.gap)

    rows = []
    for key in runs[0]:
        values = [r[key] for r in runs]
        rows.append([key, fmt_s(median(values)), fmt_s(p95(values)), fmt_s(max(values))])
    table(["from create_job call start", "median", "p95", "max"], rows)
    print(
        f"one poll (GET job) took median {fmt_s(median(requests))}, p95 {fmt_s(p95(requests))} "
        f"over {len(requests)} requests\n"
    )

    for key in ("RUNNING (history)", "RUNNING (polling)"):
        values = [r[key] for r in runs]
        goal(
            f"submit -> {key}",
            f"median {fmt_s(median(values))}, p95 {fmt_s(p95(values))} over {len(values)}",
            f"median <= {GOAL_S} s",
            median(values) <= GOAL_S,
        )


if __name__ == "__main__":
    main()
