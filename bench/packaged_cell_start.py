"""Submit -> RUNNING -> the cell's first line, for a packaged cell on the faithful stand-in.

A cell that imports numpy and yaml is packaged by ``package_cell`` (requirements:
cloudpickle, numpy, PyYAML) and submitted as a job. Cold: the image cache is empty, so
the image's stand-in (a virtualenv with pip) and the requirements layer are built
(pip installs from this machine's download cache). Warm: both are cached; the job's
own install step (``python -m bt_jupyter.install``) finds everything satisfied.

    .venv/bin/python bench/packaged_cell_start.py [--repeat 5] [--cold 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import Bench, S, bench_service, fmt_s, goal, header, history_times, median, table
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import spec
from bt_jupyter.packaging import Bundle, PackageOptions, package_cell

GOAL_S = 0.5  # warm submit -> RUNNING, as bench/README.md's goal for a cached environment
CELL = (
    "import numpy as np\nimport yaml\nprint('cell ran', int(np.arange(4).sum()), yaml.__name__)\n"
)


def packaged() -> Bundle:
    shell = InteractiveShell.instance()
    return package_cell(CELL, shell.user_ns, PackageOptions())


def one(bench: Bench, bundle: Bundle) -> dict[str, float]:
    client, project = bench.client, bench.project
    artifact, _ = client.upload_artifact(bundle.archive)
    t0 = time.time()
    job = client.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image=bundle.base_image),
            runtime=spec.Runtime(start_commands=bundle.start_commands),
        ),
        [artifact],
    )
    first_line: float | None = None
    while first_line is None:
        for line in client.all_logs(project.id, job.id):
            if line.message.startswith("cell ran"):
                first_line = int(line.timestamp) / 1e9
        current = client.job(project.id, job.id).training_job
        if first_line is None and current.status.is_terminal:
            raise RuntimeError(
                f"job {job.id} ended {current.status.short}: {current.error_message}"
            )
        time.sleep(0.02)
    at = history_times(client, job)
    return {
        "submit -> RUNNING": at[S.RUNNING] - t0,
        "RUNNING -> cell's first line": first_line - at[S.RUNNING],
        "submit -> cell's first line": first_line - t0,
    }


def run(repeat: int, cache: Path, gap: float) -> list[dict[str, float]]:
    """``repeat`` submissions on a fresh service whose image cache is ``cache``; ``gap``
    quiet seconds before each (the service's standby runner is ready again by then)."""
    os.environ["BT_JUPYTER_IMAGE_CACHE"] = str(cache)
    bundle = packaged()
    runs = []
    with bench_service() as bench:
        for _ in range(repeat):
            time.sleep(gap)
            runs.append(one(bench, bundle))
    return runs


def report(title: str, runs: list[dict[str, float]]) -> None:
    print(f"\n{title} (N={len(runs)})")
    rows = [[k, fmt_s(median([r[k] for r in runs]))] for k in runs[0]]
    table(["measure", "median"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm submissions")
    parser.add_argument("--cold", type=int, default=2, help="cold runs (fresh cache each)")
    parser.add_argument("--gap", type=float, default=1.0, help="quiet seconds between jobs")
    args = parser.parse_args()
    header(
        "packaged cell: submit -> RUNNING -> first line",
        f"requirements {packaged().requirements}; {args.cold} cold, {args.repeat} warm",
    )
    cold: list[dict[str, float]] = []
    for _ in range(args.cold):
        folder = Path(tempfile.mkdtemp(prefix="bt_bench_cache_"))
        try:
            cold += run(1, folder, args.gap)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="bt_bench_cache_"))
    try:
        run(1, folder, args.gap)  # fills the cache
        warm = run(args.repeat, folder, args.gap)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report("cold: image stand-in and requirements layer built", cold)
    report("warm: both cached", warm)
    values = [r["submit -> RUNNING"] for r in warm]
    goal(
        "warm submit -> RUNNING",
        fmt_s(median(values)),
        f"median <= {GOAL_S} s",
        median(values) <= GOAL_S,
    )
    key = "submit -> cell's first line"
    ratio = median([r[key] for r in cold]) / median([r[key] for r in warm])
    print(f"cold / warm, {key}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
