"""``make demo``: run notebooks/quickstart.ipynb headless on the embedded local service.

It trains a tiny transformer as a job, follows it to the end, deploys its latest
checkpoint and asks the deployed model for a completion and a chat answer; every
cell's output is printed as it runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def main() -> int:
    if not NOTEBOOK.is_file():
        print(f"{NOTEBOOK} not found: run `make demo` from a checkout of the repository")
        return 2
    nb = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    started = time.monotonic()
    print(f"Running {NOTEBOOK.name} on the embedded local service (no account, no GPU) ...")

    def show(**hook: object) -> None:
        cell = hook["cell"]
        assert isinstance(cell, nbformat.NotebookNode)
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            if text:
                print(text.rstrip())

    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        on_cell_executed=show,
    )
    client.execute()
    print(f"Done in {time.monotonic() - started:.0f}s. Open it live with `make lab`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
