"""Shared by the benchmark scripts: a private local service, statistics, and reporting.

Not a benchmark itself. Each script imports it as ``_common`` (the script's own folder is
first on ``sys.path`` when run as ``python bench/<name>.py``); it also puts the repository
root on ``sys.path`` so ``tests.helpers`` can be used.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bt_jupyter import api, spec  # noqa: E402
from bt_jupyter.client import ApiClient  # noqa: E402
from bt_jupyter.local.home import Home  # noqa: E402
from tests.helpers import bundle, running_service  # noqa: E402

S = spec.TrainingJobStatus

#: A job script printing ``tick <seq> <time.time_ns()>`` every ``interval`` s (argv:
#: lines, interval), for latency benchmarks: receive time minus the embedded send time.
TICKER = """
import sys, time
lines, interval = int(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
for seq in range(lines):
    print(f"tick {seq} {time.time_ns()}", flush=True)
    # fixed schedule, so a slow reader does not slow the sender down
    time.sleep(max(0.0, start + (seq + 1) * interval - time.monotonic()))
"""

#: A job script printing ``argv[1]`` lines as fast as Python can (10,000 per write). It
#: keeps its own figures in ``emit_stats.json``: wall time, and of it the time it waited
#: for a CPU (``run_delay`` of /proc/self/schedstat, Linux) and on a full pipe (the rest,
#: less the time it ran): what a reader of its output cost it, free of the machine's drift.
EMITTER = """
import json, sys, time
lines = int(sys.argv[1])
def clock():
    try:
        ran, waited = open("/proc/self/schedstat").read().split()[:2]
        return time.perf_counter(), int(ran) / 1e9, int(waited) / 1e9
    except OSError:
        return time.perf_counter(), time.process_time(), 0.0
start = clock()
out = open(1, "wb", buffering=1 << 20, closefd=False)
for base in range(0, lines, 10_000):
    end = min(lines, base + 10_000)
    chunk = "".join(f"line {i:07d} step={i} loss=0.{i % 9973:04d}\\n" for i in range(base, end))
    out.write(chunk.encode())
out.flush()
wall, ran, waited = (b - a for a, b in zip(start, clock()))
stats = {"wall": wall, "cpu_wait": waited, "pipe_wait": max(0.0, wall - ran - waited)}
with open("emit_stats.json", "w") as f:
    json.dump(stats, f)
"""

__all__ = [
    "EMITTER",
    "REPO",
    "S",
    "TICKER",
    "Bench",
    "bench_service",
    "bundle",
    "emitter_job",
    "fmt_s",
    "goal",
    "header",
    "history_times",
    "job_spec",
    "node_line_count",
    "p95",
    "percentile",
    "table",
    "wait_terminal",
]


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95.0)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# --------------------------------------------------------------------------- reporting


def header(title: str, detail: str) -> None:
    """Title, what runs, and the machine (with a warning when it is not quiet)."""
    busy = psutil.cpu_percent(interval=1.0)
    print(f"== {title}")
    print(f"   {detail}")
    print(
        f"   machine: {os.cpu_count()} CPU(s), {platform.python_implementation()} "
        f"{platform.python_version()}; CPU {busy:.0f}% busy in the second before start"
    )
    if busy > 20:
        print("   WARNING: the machine is busy; figures may be noisy")
    print()


def fmt_s(seconds: float) -> str:
    """Seconds as ms below 1 s, else seconds."""
    if math.isnan(seconds):
        return "n/a"
    if abs(seconds) < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.3f} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Left-aligned first column, right-aligned figures."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(padded))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()


def goal(what: str, measured: str, target: str, met: bool | None) -> bool | None:
    """One summary line: what was measured, the goal, and whether it was met."""
    verdict = {True: "MET", False: "MISSED", None: "INFO"}[met]
    print(f"[{verdict}] {what}: {measured} (goal: {target})")
    return met


# --------------------------------------------------------------------------- the service


@dataclass
class Bench:
    home: Home
    client: ApiClient
    project: api.TrainingProjectV1

    def upload(self, files: dict[str, str]) -> list[api.CreateTrainingJobS3Artifact]:
        return [self.client.upload_artifact(bundle(files))[0]]


def job_spec(commands: list[str], name: str | None = None) -> spec.TrainingJob:
    """A CPU job with these start commands and no requirements (a warm environment)."""
    return spec.TrainingJob(
        image=spec.Image(base_image="python:3.11-slim"),
        runtime=spec.Runtime(start_commands=commands),
        name=name,
    )


@contextmanager
def bench_service(keep: bool = False, port: int = 0) -> Iterator[Bench]:
    """A local service on a private temporary home, torn down afterwards.

    On exit: every job still running is stopped and awaited, the service is stopped
    (``daemon.stop`` by pid, then its standby runner is awaited), any process still
    running from the home is reported, and the home is removed unless ``keep``.
    """
    root = Path(tempfile.mkdtemp(prefix="bt_bench_"))
    os.environ["BT_JUPYTER_HOME"] = str(root)
    home = Home(root)
    try:
        with running_service(home, port=port):
            client = ApiClient.local(root)
            try:
                project = client.upsert_project(f"bench-{int(time.time())}")
                bench = Bench(home, client, project)
                try:
                    yield bench
                finally:
                    _stop_all(bench)
            finally:
                client.close()
        deadline = time.monotonic() + 10  # a service or runner may still be exiting
        while (left := _leftovers(root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            print(f"WARNING: processes still running from {root}: {left}", file=sys.stderr)
    finally:
        if keep:
            print(f"(home kept at {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _stop_all(bench: Bench) -> None:
    for job in bench.client.jobs(bench.project.id):
        if not job.status.is_terminal:
            bench.client.stop_job(bench.project.id, job.id)
    for job in bench.client.jobs(bench.project.id):
        if not job.status.is_terminal:
            wait_terminal(bench.client, job, timeout=60)


def _leftovers(root: Path) -> list[int]:
    """Pids of processes whose command line or working directory lies in ``root``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        cwd = proc.info.get("cwd") or ""
        if proc.pid != os.getpid() and (str(root) in cmd or cwd.startswith(str(root))):
            found.append(proc.pid)
    return found


# --------------------------------------------------------------------------- jobs


def wait_terminal(
    client: ApiClient, job: api.TrainingJobV1, timeout: float = 120, every: float = 0.1
) -> api.TrainingJobV1:
    deadline = time.monotonic() + timeout
    while True:
        current = client.job(job.training_project_id, job.id).training_job
        if current.status.is_terminal:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job.id} still {current.status.short} after {timeout}s")
        time.sleep(every)


def history_times(client: ApiClient, job: api.TrainingJobV1) -> dict[spec.TrainingJobStatus, float]:
    """Epoch seconds at which the job reached each status (the history endpoint)."""
    return {
        status: datetime.fromisoformat(at).timestamp()
        for status, at in client.history(job.training_project_id, job.id)
    }


def node_line_count(home: Home, job_id: str) -> int:
    """Lines the job's nodes wrote (the runner's own lines have no node)."""
    with closing(sqlite3.connect(f"file:{home.db}?mode=ro", uri=True, timeout=60)) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM logs WHERE job_id = ? AND node IS NOT NULL", (job_id,)
        ).fetchone()
    return int(row[0])


def emitter_job(bench: Bench, lines: int, name: str) -> tuple[api.TrainingJobV1, dict[str, float]]:
    """Runs ``EMITTER`` as a job to the end: (the job, its own figures)."""
    job = bench.client.create_job(
        bench.project.id,
        job_spec([f"python emit.py {lines}"], name=name),
        bench.upload({"emit.py": EMITTER}),
    )
    done = wait_terminal(bench.client, job, timeout=600, every=0.2)
    if done.status != S.COMPLETED:
        raise RuntimeError(f"job ended {done.status.short}: {done.error_message}")
    stats = (bench.home.job_dir(job.id) / "work" / "emit_stats.json").read_text()
    return done, json.loads(stats)
