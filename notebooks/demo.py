"""``make demo``: run quickstart.ipynb headless on the embedded local service.

It trains a tiny transformer as a job, follows it to the end, deploys its latest
checkpoint and asks the deployed model for a completion and a chat answer; every cell's
output is printed as it runs. While a cell waits on a job, a line every few seconds says
what for (building the job's environment on a cold cache takes minutes: which packages,
how long so far). No cell has a deadline: a slow first install on a busy machine is not a
failure. When something does fail, one paragraph says where, why and what to do.

A developer's script of this repository (it runs a notebook of the checkout, with
nbclient from the test environment), not a module of the package.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from bt_jupyter import Client
from bt_jupyter.errors import BtJupyterError

NOTEBOOK = Path(__file__).resolve().parent / "quickstart.ipynb"
#: How often a running cell's progress line is printed (--progress-every).
PROGRESS_EVERY_S = 10.0
#: The kernel is given this long to start on a busy machine.
KERNEL_START_S = 300


def _first_line(source: str) -> str:
    """How a cell is named in what the demo prints: its first line, shortened."""
    lines = source.strip().splitlines()
    return lines[0][:60] if lines else ""


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _waiting_for(job: Any) -> str:
    """What the newest job is doing, in a line: its status, and while its environment is
    built, which packages (the runner's "Requirements: building ..." line) and pip's
    newest line; else its newest log line."""
    status = job.status.short
    if job.status.is_terminal:
        return f"job {job.id} {status}"
    building, last = None, ""
    for line in job.logs():
        message = line.message.strip()
        if message.startswith("Requirements: building"):
            building = message
        elif message.startswith("Requirements: layer"):
            building = None  # built
        if message and not message.startswith("WARNING:"):  # pip's notes on this machine
            last = message
    if building:
        names = building.split(": ", 2)[-1]
        return f"job {job.id} {status}: building its environment ({names}); now: {last[:100]}"
    return f"job {job.id} {status}" + (f": {last[:120]}" if last else "")


class Progress:
    """Prints what a running cell waits for, every ``every`` seconds, from a thread."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.cell: str | None = None  # "cell 5 (job.wait())" while one runs
        self.started = 0.0
        self.stopped = threading.Event()
        self.client: Client | None = None
        self.thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)
        self.thread.start()

    def cell_started(self, index: int, source: str) -> None:
        self.cell, self.started = f"cell {index} ({_first_line(source)})", time.monotonic()

    def cell_done(self) -> None:
        self.cell = None

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            cell = self.cell
            if cell is None:
                continue
            waited = time.monotonic() - self.started
            if waited < self.every:  # a cell that ends within a tick needs no word
                continue
            try:
                doing = self._doing()
            except BtJupyterError as exc:  # the service starts, or restarts: say so
                doing = f"the local service does not answer yet ({exc})"
            except Exception as exc:  # a progress line must never end the demo
                doing = f"could not ask the local service ({type(exc).__name__}: {exc})"
            if self.cell == cell:
                print(f"  ... {cell}, {_elapsed(waited)} so far: {doing}", flush=True)

    def _doing(self) -> str:
        if self.client is None:
            self.client = Client.local()
        jobs, _ = self.client.job_page(limit=1)  # the newest job: the running cell's
        return _waiting_for(jobs[0]) if jobs else "starting"

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        if self.client is not None:
            self.client.close()


def _failure(notebook: Path, nb: Any, index: int | None, exc: BaseException) -> str:
    """One paragraph: which cell, what went wrong, what to do."""
    where, errors = "starting the notebook's kernel", []
    if index is not None:
        cell = nb.cells[index]
        where = f"cell {index} ({_first_line(cell.source)})"
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        why = f"{errors[-1].get('ename')}: {errors[-1].get('evalue')}"
    elif isinstance(exc, DeadKernelError):
        why = "the notebook's kernel died (out of memory?)"
    else:
        lines = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return (
        f"The demo stopped at {where}: {why}. The job and its log stay on the local "
        f"service: open {notebook.name} with `make lab` and run `%bt_jobs` and "
        "`%bt_logs JOB_ID` to see them, then run `make demo` again (what was already "
        "built is reused)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--progress-every", type=float, default=PROGRESS_EVERY_S, metavar="S")
    args = parser.parse_args(argv)
    notebook: Path = args.notebook
    if not notebook.is_file():
        print(f"{notebook} not found: run `make demo` from a checkout of the repository")
        return 2
    nb = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
    started = time.monotonic()
    print(f"Running {notebook.name} on the embedded local service (no account, no GPU) ...")
    progress = Progress(args.progress_every)
    running: dict[str, int | None] = {"cell": None}

    def cell_started(**hook: Any) -> None:
        running["cell"] = hook["cell_index"]
        progress.cell_started(hook["cell_index"], hook["cell"].source)

    def cell_executed(**hook: Any) -> None:
        progress.cell_done()
        for output in hook["cell"].get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            if text:
                print(text.rstrip(), flush=True)

    sockets = tempfile.TemporaryDirectory(prefix="bt-demo-")
    # the kernel's sockets are files of this user (ipc), not TCP ports anyone here can reach
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=f"{sockets.name}/kernel")
    client = NotebookClient(
        nb,
        km=kernel,
        timeout=None,  # a cold cache builds torch's environment: minutes, never a failure
        startup_timeout=KERNEL_START_S,
        resources={"metadata": {"path": str(notebook.parent)}},
        on_cell_execute=cell_started,
        on_cell_executed=cell_executed,
    )
    try:
        client.execute()
    except KeyboardInterrupt:
        print("\nInterrupted: the job keeps running on the local service (%bt_stop JOB_ID).")
        return 130
    except (CellExecutionError, DeadKernelError, RuntimeError, TimeoutError) as exc:
        print(_failure(notebook, nb, running["cell"], exc), file=sys.stderr)
        return 1
    finally:
        progress.close()
        if kernel.has_kernel:  # a kernel we started is ours to end (nbclient leaves it)
            kernel.shutdown_kernel()
        sockets.cleanup()
    print(f"Done in {_elapsed(time.monotonic() - started)}. Open it live with `make lab`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
