"""``make demo`` runs the main job end to end on a fresh local service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home


@pytest.mark.timeout(480)
def test_demo_runs_the_main_job_on_the_local_service(tmp_path: Path) -> None:
    """About a minute on an idle 2-core machine; the deadline allows for a busy one."""
    env = {**os.environ, "BT_JUPYTER_HOME": str(tmp_path)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bt_jupyter.demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    finally:
        daemon.stop(Home(tmp_path))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "status: COMPLETED" in out
    assert "lifecycle: CREATED -> DEPLOYING -> RUNNING -> COMPLETED" in out
    assert "checkpoints: ['checkpoint-100', 'checkpoint-200']" in out
    assert "completion: '" in out
    assert "deployment STOPPED" in out
