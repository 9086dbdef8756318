"""Wall times of the exploratory loop on this machine: a 4-run sweep (2x2 grid, two at a
time, each run logging 50 metric steps) from submit to every run ended, and
``notebooks/finetune_lora.ipynb`` top to bottom in a real kernel (nbclient).

The notebook's first run on a machine builds its requirements layer (trl, peft,
datasets, ... installed once per image cache); ``--cold`` measures that run on a fresh
cache, the default measures warm runs (the cache the tests use).

    .venv/bin/python bench/exploratory_loop.py [--repeat 3] [--skip-notebook] [--cold]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import REPO, bench_service, fmt_s, goal, header, median, table

from bt_jupyter.jobs import Client
from bt_jupyter.packaging import PackageOptions

CELL = """
from bt_jupyter.runtime import log_metrics
for step in range(50):
    log_metrics(step=step, loss=lr * 1000 / (step + 1) + lora_r / 100)
"""
NOTEBOOK_GOAL_S = 120.0


def sweep_once() -> float:
    with Client.local() as client:
        started = time.monotonic()
        sweep = client.sweep(
            CELL,
            {"lr": [1e-3, 3e-3], "lora_r": [4, 8]},
            f"bench-sweep-{int(time.time() * 1000)}",
            namespace={},
            options=PackageOptions(),
            max_parallel=2,
        )
        sweep.wait(timeout=300, poll=0.2)
        elapsed = time.monotonic() - started
        statuses = {r.status for r in sweep.runs}
        if statuses != {"COMPLETED"}:
            raise RuntimeError(f"the sweep ended {statuses}")
        return elapsed


def notebook_once() -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "finetune_lora.ipynb", as_version=4)
    started = time.monotonic()
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        # a folder of its own: the notebook writes tiny-base/ and bt_checkpoints/ there
        resources={"metadata": {"path": tempfile.mkdtemp(prefix="bt_bench_nb_")}},
    ).execute()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-notebook", action="store_true")
    parser.add_argument("--cold", action="store_true", help="a fresh image cache first")
    args = parser.parse_args()
    if args.cold:
        os.environ["BT_JUPYTER_IMAGE_CACHE"] = tempfile.mkdtemp(prefix="bt_bench_cache_")
    header(
        "the exploratory loop: a sweep and the LoRA notebook",
        f"{args.repeat} repeats on {os.cpu_count()} CPUs, "
        f"{'cold' if args.cold else 'warm'} image cache",
    )
    sweeps: list[float] = []
    notebooks: list[float] = []
    with bench_service():
        sweep_once()  # warm-up: the plain requirements layer
        for _ in range(args.repeat):
            sweeps.append(sweep_once())
        if not args.skip_notebook:
            os.environ["BT_NOTEBOOK_BACKEND"] = "local"
            for _ in range(1 if args.cold else args.repeat):
                notebooks.append(notebook_once())
    rows = [["4-run sweep (2x2, 2 at a time)", fmt_s(median(sweeps)), fmt_s(max(sweeps))]]
    if notebooks:
        rows.append(["finetune_lora.ipynb", fmt_s(median(notebooks)), fmt_s(max(notebooks))])
    table(["what", "median", "max"], rows)
    if notebooks:
        goal(
            "LoRA notebook top to bottom",
            fmt_s(median(notebooks)),
            f"< {NOTEBOOK_GOAL_S:.0f} s",
            median(notebooks) < NOTEBOOK_GOAL_S,
        )


if __name__ == "__main__":
    main()
