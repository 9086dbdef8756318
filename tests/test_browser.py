"""A real browser: JupyterLab in Debian's chromium, driven by Playwright.

A ``%%bt_train`` cell runs, its widget streams logs, Stop is clicked (and confirmed), the
widget shows STOPPED, and a screenshot is saved to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest

from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.helpers import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (apt-get install chromium)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def lab(local_home: Home, tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on a free port; yields its base URL with the token."""
    port, token = _free_port(), new_id(24)
    env = {**os.environ, "BT_JUPYTER_HOME": str(local_home.root)}
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}",
            "--LabApp.expose_app_in_browser=True", "--ServerApp.ip=127.0.0.1",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "JupyterLab to answer", every=0.2)
        yield f"{base}|{token}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.timeout(240)
def test_bt_train_in_jupyterlab_streams_logs_and_stops(lab: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token = lab.split("|")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext bt_jupyter\n%bt_project browser"),
        nbformat.v4.new_code_cell(
            "%%bt_train --name browser-run\n"
            "import time\n"
            "for step in range(600):\n"
            "    print(f'step {step}', flush=True)\n"
            "    time.sleep(0.2)"
        ),
    ]
    nbformat.write(nb, tmp_path / "train.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda dialog: dialog.accept())  # the Stop confirmation
        try:
            page.goto(f"{base}/lab/tree/train.ipynb?token={token}")
            page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " return w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'; }",
                timeout=90_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            logs = page.locator("[data-testid=logs]")
            logs.wait_for(timeout=90_000)
            page.wait_for_function(
                "() => /step [3-9]/.test(document.querySelector('[data-testid=logs]').textContent)",
                timeout=90_000,
            )
            status = page.locator("[data-testid=status]")
            assert status.inner_text() == "RUNNING"
            page.wait_for_function(
                "() => document.querySelector('[data-testid=resources]')"
                ".textContent.startsWith('node 0: CPU')",
                timeout=30_000,
            )
            page.locator("[data-testid=stop]").click()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=status]').textContent === 'STOPPED'",
                timeout=60_000,
            )
            time.sleep(0.5)  # let the last log lines render before the picture
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-widget-stopped.png"), full_page=True)
            text = logs.inner_text()
            assert "step 0" in text
            assert "Stop requested" in text
        finally:
            browser.close()
