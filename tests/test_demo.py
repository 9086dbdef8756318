"""``make demo`` runs the main job end to end on a fresh local service: it executes
notebooks/quickstart.ipynb, so this is also that notebook's test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home

DEMO = Path(__file__).resolve().parents[1] / "notebooks" / "demo.py"


def _demo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The demo script run as `make demo` runs it; its local service stopped after.
    (No deadline of its own: pytest-timeout is the guard against a hang.)"""
    env = {**os.environ, "BT_JUPYTER_HOME": str(home)}
    try:
        return subprocess.run(
            [sys.executable, str(DEMO), *args], env=env, capture_output=True, text=True
        )
    finally:
        daemon.stop(Home(home))


@pytest.mark.timeout(1800)
def test_demo_runs_the_main_job_on_the_local_service(tmp_path: Path) -> None:
    """About a minute on an idle 2-core machine with a warm image cache; minutes when
    the job's environment (torch, transformers) is built first, more on a busy machine."""
    done = _demo(tmp_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "status: COMPLETED" in out
    assert "lifecycle: CREATED -> DEPLOYING -> RUNNING -> COMPLETED" in out
    assert "checkpoints: ['checkpoint-100', 'checkpoint-200']" in out
    loss = float(out.split("final loss: ")[1].split()[0])
    assert loss < 1.0  # it learned the corpus
    assert "is ACTIVE at http://127.0.0.1:" in out
    assert "completion: '" in out
    assert "chat: '" in out
    assert "deployment STOPPED" in out
    assert done.stderr == ""  # nothing beside the notebook's own output


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]  # type: ignore[no-untyped-call]
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    return path


@pytest.mark.timeout(600)
def test_demo_says_what_a_cell_waits_for_and_a_failure_in_one_paragraph(tmp_path: Path) -> None:
    """A job that runs a while gets progress lines naming it and what it printed last; a
    job that fails ends the demo with one paragraph (where, why, what to do), exit 1,
    and no kernel traceback."""
    notebook = _notebook(
        tmp_path / "failing.ipynb",
        "%load_ext bt_jupyter\n%bt_project demo-failure",
        "%%bt_train --wait --name slow-then-broken\n"
        "import time\n"
        "for i in range(6):\n"
        "    print(f'working {i}', flush=True)\n"
        "    time.sleep(1)\n"
        "raise ValueError('the data file is empty')",
        "print('never reached')",
    )
    done = _demo(tmp_path / "home", "--notebook", str(notebook), "--progress-every", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    progress = r"\.\.\. cell 1 \(%%bt_train --wait --name slow-then-broken\), \d+s so far: "
    assert re.search(progress + r"job \w+ (DEPLOYING|RUNNING)", done.stdout), done.stdout
    assert "never reached" not in done.stdout
    said = done.stderr.strip()
    assert "\n" not in said, said  # one paragraph
    assert said.startswith("The demo stopped at cell 1 (%%bt_train --wait --name slow-then-broken)")
    assert "the data file is empty" in said
    assert "make demo" in said
    assert "Traceback (most recent call last)" not in done.stdout + done.stderr
    assert "\x1b[" not in said  # no terminal colours of a kernel traceback
