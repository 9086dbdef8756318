"""Job faults and containment: how fast a fault settles a job, and what it leaves behind.

Three figures, medians of ``--repeat`` runs, for each containment mechanism the machine
offers (a cgroup v2 per job where one can be created; always the subreaper + marker
fallback, ``BT_JUPYTER_CONTAINMENT=subreaper``):
(a) node killed: SIGKILL of a node's process (its ``bash``, with a Python child still
    holding the log pipes) -> the job FAILED, as stamped in the status history;
(b) stop of a job that ignores SIGTERM (``trap '' TERM``, a daemon too): the stop
    request -> STOPPED (history), with the stop grace set to ``--grace`` seconds; the
    figure of interest is the overshoot past the grace;
(c) strays: processes still alive right after STOPPED of a job that started a daemon
    with ``setsid -f`` (and one with a double fork): the hidden pids plus any process
    carrying the job's ``BT_TRAINING_JOB_ID``. Must be 0.

    .venv/bin/python bench/trust_faults.py [--repeat 5] [--grace 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from dataclasses import dataclass

import psutil
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

from bt_jupyter.local import containment
from bt_jupyter.local.settings import CONTAINMENT_ENV
from bt_jupyter.local.store import Store
from tests.helpers import DOUBLE_FORK, SETSID

GOAL_KILL_S = 1.0
GOAL_OVERSHOOT_S = 1.0


@dataclass(frozen=True)
class Figures:
    kill_to_failed: list[float]
    stop_to_stopped: list[float]
    strays: list[int]


def _lines(bench: Bench, job_id: str) -> list[str]:
    return [line.message for line in bench.client.all_logs(bench.project.id, job_id)]


def _started(bench: Bench, commands: list[str], pids: int) -> tuple[str, list[int]]:
    """Submit; wait for ``ready`` and ``pids`` hidden pids. (job id, hidden pids)."""
    job = bench.client.create_job(bench.project.id, job_spec([*commands], name="faults"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = _lines(bench, job.id)
        hidden = [int(m.split()[1]) for m in lines if m.startswith("pid ")]
        if "ready" in lines and len(hidden) >= pids:
            return job.id, hidden
        time.sleep(0.05)
    raise TimeoutError(f"job {job.id} never said ready")


def _settled(bench: Bench, job_id: str) -> None:
    """Wait for the job's runner to exit (it does right after the final status), so
    that it is never counted as a process left behind."""
    row = Store(bench.home.db).job(job_id)
    pid = row.runner_pid if row else None
    deadline = time.monotonic() + 10
    while pid and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _strays(job_id: str, hidden: list[int]) -> list[int]:
    """Live processes of the job: its hidden pids and what carries its marker."""
    marked = containment._marked_pids(f"{containment.MARKER}={job_id}")
    return sorted({p for p in [*hidden, *marked] if _alive(p)})


def kill_a_node(bench: Bench) -> float:
    job_id, _ = _started(
        bench, ["echo pid $$", "echo ready", "python -c 'import time; time.sleep(600)'"], 1
    )
    node = int((bench.home.job_dir(job_id) / "nodes").read_text().split()[0])
    killed = time.time()
    os.kill(node, signal.SIGKILL)
    job = bench.client.job(bench.project.id, job_id).training_job
    done = wait_terminal(bench.client, job, timeout=60, every=0.05)
    if done.status != S.FAILED:
        raise RuntimeError(f"job ended {done.status.short}, not FAILED")
    _settled(bench, job_id)
    return history_times(bench.client, job)[S.FAILED] - killed


def stop_stubborn(bench: Bench) -> float:
    commands = ["trap '' TERM", SETSID, "echo ready", "while true; do sleep 0.1; done"]
    job_id, _ = _started(bench, commands, 1)
    asked = time.time()
    bench.client.stop_job(bench.project.id, job_id)
    job = bench.client.job(bench.project.id, job_id).training_job
    if wait_terminal(bench.client, job, timeout=120, every=0.05).status != S.STOPPED:
        raise RuntimeError("not STOPPED")
    _settled(bench, job_id)
    return history_times(bench.client, job)[S.STOPPED] - asked


def stop_with_daemons(bench: Bench) -> int:
    job_id, hidden = _started(bench, [SETSID, DOUBLE_FORK, "echo ready", "sleep 600"], 2)
    bench.client.stop_job(bench.project.id, job_id)
    job = bench.client.job(bench.project.id, job_id).training_job
    wait_terminal(bench.client, job, timeout=120, every=0.05)
    left = _strays(job_id, hidden)
    _settled(bench, job_id)
    for pid in left:  # never leave them running, whatever the figure
        os.kill(pid, signal.SIGKILL)
    return len(left)


def measure(mode: str, repeat: int, grace: float) -> Figures:
    os.environ[CONTAINMENT_ENV] = mode
    os.environ["BT_JUPYTER_STOP_GRACE_S"] = str(grace)
    try:
        with bench_service() as bench:
            warm, _ = _started(bench, ["echo pid 0", "echo ready"], 1)  # the image stand-in
            _settled(bench, warm)
            kills = [kill_a_node(bench) for _ in range(repeat)]
            stops = [stop_stubborn(bench) for _ in range(repeat)]
            strays = [stop_with_daemons(bench) for _ in range(repeat)]
    finally:
        os.environ.pop(CONTAINMENT_ENV, None)
        os.environ.pop("BT_JUPYTER_STOP_GRACE_S", None)
    return Figures(kills, stops, strays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each fault")
    parser.add_argument("--grace", type=float, default=2.0, help="stop grace (s)")
    args = parser.parse_args()
    modes = (["cgroup"] if containment.cgroup_root() is not None else []) + ["subreaper"]
    header(
        "job faults: node SIGKILL -> FAILED, stop ignoring SIGTERM -> STOPPED, strays",
        f"{args.repeat} runs of each, stop grace {args.grace:g} s, mechanisms: {', '.join(modes)}",
    )
    results = {mode: measure(mode, args.repeat, args.grace) for mode in modes}
    rows = []
    for mode, fig in results.items():
        stop = median(fig.stop_to_stopped)
        rows.append(
            [
                mode,
                fmt_s(median(fig.kill_to_failed)),
                fmt_s(max(fig.kill_to_failed)),
                fmt_s(stop),
                fmt_s(stop - args.grace),
                str(sum(fig.strays)),
            ]
        )
    table(
        ["mechanism", "kill->FAILED med", "max", "stop->STOPPED med", "past grace", "strays"],
        rows,
    )
    for mode, fig in results.items():
        kill = median(fig.kill_to_failed)
        goal(f"{mode}: node SIGKILL -> FAILED (median)", fmt_s(kill), "<= 1 s", kill <= GOAL_KILL_S)
        over = median(fig.stop_to_stopped) - args.grace
        goal(
            f"{mode}: STOPPED past the {args.grace:g} s grace, SIGTERM ignored (median)",
            fmt_s(over),
            "<= 1 s",
            over <= GOAL_OVERSHOOT_S,
        )
        total = sum(fig.strays)
        goal(
            f"{mode}: strays after STOPPED, setsid + double-fork daemons ({len(fig.strays)} jobs)",
            str(total),
            "0",
            total == 0,
        )


if __name__ == "__main__":
    main()
