"""Packaging speed: a cell that uses 20 notebook functions and a 50 MB numpy array.

Goals: first packaging <= 1 s median; re-packaging the unchanged cell <= 0.2 s median.
Run: .venv/bin/python bench/package_cell.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter.packaging import PackageOptions, package_cell

SETUP = "\n".join(
    [
        "import numpy as np",
        "data = np.random.default_rng(0).random(50_000_000 // 8)",
        *[f"def f{i}(x):\n    return x + {i}" for i in range(20)],
    ]
)
CELL = "total = sum(f(float(data[0])) for f in [" + ", ".join(f"f{i}" for i in range(20)) + "])"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    shell = InteractiveShell.instance()
    shell.run_cell(SETUP)
    options = PackageOptions(notebook_dir=Path.cwd())
    first, again = [], []
    for _ in range(args.repeat):
        shell.user_ns["data"] = shell.user_ns["data"].copy()  # a new object: no caching
        started = time.perf_counter()
        bundle = package_cell(CELL, shell.user_ns, options)
        _ = bundle.sha256
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        unchanged = package_cell(CELL, shell.user_ns, options)
        same = unchanged.sha256 == bundle.sha256
        again.append(time.perf_counter() - started)
        assert same, "re-packaging an unchanged cell changed the hash"
    size = len(bundle.archive)
    print(f"bundle: {size / 1e6:.1f} MB, {len(bundle.manifest['captured'])} captured names")
    print(f"{'':24}{'median':>10}{'p95':>10}{'max':>10}")
    for label, times in (("package (new state)", first), ("re-package (unchanged)", again)):
        p95 = sorted(times)[int(0.95 * (len(times) - 1))]
        print(f"{label:24}{statistics.median(times):>9.3f}s{p95:>9.3f}s{max(times):>9.3f}s")
    for label, times, goal in (("package", first, 1.0), ("re-package", again, 0.2)):
        median = statistics.median(times)
        verdict = "MET" if median <= goal else "MISSED"
        print(f"[{verdict}] {label}: median {median:.3f} s over {len(times)} (goal: <= {goal} s)")


if __name__ == "__main__":
    main()
