"""A second requirements set that shares torch with the first: how long and how much disk.

On an empty image cache, job A installs ``torch`` (its requirements layer is built), then
job B installs ``torch`` and one small package more (a second layer). For each: submit ->
the job's first own line, and the cache's size after it (a file with several hard links
counted once, as the disk holds it). ``--pip`` builds layers as before the package store
(``BT_JUPYTER_PACKAGE_STORE=0``: pip installs each layer in full).

    .venv/bin/python bench/requirements_layers.py [--repeat 3] [--pip]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _common import Bench, S, bench_service, fmt_s, goal, header, median, table

from bt_jupyter.local.package_store import STORE_ENV, remove_tree
from tests.helpers import INSTALL, submit

SETS = {"A": "torch==2.13.0\n", "B": "torch==2.13.0\ntomli-w==1.0.0\n"}
SCRIPT = "import torch\nprint('first line', torch.__version__, flush=True)\n"
GOAL_RATIO, GOAL_MB = 0.3, 100


def disk_bytes(root: Path) -> int:
    """What ``root`` takes on disk, each inode once."""
    seen: set[int] = set()
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total


def first_line(bench: Bench, requirements: str) -> float:
    files = {"requirements.txt": requirements, "run.py": SCRIPT}
    started = time.time()
    job = submit(bench.client, bench.project, [INSTALL, "python run.py"], files=files)
    while True:
        for line in bench.client.all_logs(bench.project.id, job.id):
            if line.message.startswith("first line"):
                return int(line.timestamp) / 1e9 - started
        current = bench.client.job(bench.project.id, job.id).training_job
        if current.status.is_terminal and current.status != S.COMPLETED:
            raise RuntimeError(f"job {job.id} {current.status.short}: {current.error_message}")
        time.sleep(0.05)


def one() -> dict[str, float]:
    cache = Path(tempfile.mkdtemp(prefix="bt_bench_layers_"))
    os.environ["BT_JUPYTER_IMAGE_CACHE"] = str(cache)
    try:
        with bench_service() as bench:
            a = first_line(bench, SETS["A"])
            after_a = disk_bytes(cache)
            b = first_line(bench, SETS["B"])
            after_b = disk_bytes(cache)
        return {"A: submit -> first line (s)": a, "B: submit -> first line (s)": b,
                "B / A": b / a, "cache after A (MB)": after_a / 1e6,
                "B adds (MB)": (after_b - after_a) / 1e6}  # fmt: skip
    finally:
        remove_tree(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs, each on an empty cache")
    parser.add_argument("--pip", action="store_true", help="layers built by pip in full")
    args = parser.parse_args()
    if args.pip:
        os.environ[STORE_ENV] = "0"
    how = "pip installs each layer (before)" if args.pip else "package store"
    header("requirements layers sharing torch", f"{how}; A = {SETS['A'].split()}, "
           f"B = {SETS['B'].split()}; {args.repeat} runs, each on an empty cache")  # fmt: skip
    runs = [one() for _ in range(args.repeat)]
    rows = [[k, f"{median([r[k] for r in runs]):.2f}"] for k in runs[0]]
    table(["measure", "median"], rows)
    ratio = median([r["B / A"] for r in runs])
    added = median([r["B adds (MB)"] for r in runs])
    goal("B / A, submit -> first line", f"{ratio:.2f}x", f"<= {GOAL_RATIO}x", ratio <= GOAL_RATIO)
    goal("disk B adds", f"{added:.0f} MB", f"<= {GOAL_MB} MB", added <= GOAL_MB)
    print(f"(A's median: {fmt_s(median([r['A: submit -> first line (s)'] for r in runs]))})")


if __name__ == "__main__":
    main()
