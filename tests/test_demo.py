"""``make demo`` runs the main job end to end on a fresh local service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home


def test_demo_runs_the_main_job_on_the_local_service(tmp_path: Path) -> None:
    env = {**os.environ, "BT_JUPYTER_HOME": str(tmp_path)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bt_jupyter.demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        daemon.stop(Home(tmp_path))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "[node 0]  step 200  loss" in out
    assert "Final status: COMPLETED" in out
    assert "checkpoint-100" in out
    assert "checkpoint-200" in out
    lifecycle = out.split("--- lifecycle ---")[1].split("Final status")[0]
    assert [line.split()[-1] for line in lifecycle.strip().splitlines()] == [
        "CREATED",
        "DEPLOYING",
        "RUNNING",
        "COMPLETED",
    ]
