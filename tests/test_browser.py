"""A real browser: JupyterLab in Debian's chromium, driven by Playwright.

A ``%%bt_train`` cell runs, its widget streams logs, Stop is clicked (and confirmed in
JupyterLab's dialog), the widget shows STOPPED, and a screenshot is saved to
``test-artifacts/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bt_jupyter.local.home import Home
from tests.browser import ARTIFACTS, jupyterlab, needs_chromium, notebook_page, write_notebook

pytestmark = needs_chromium


@pytest.mark.timeout(240)
def test_bt_train_in_jupyterlab_streams_logs_and_stops(local_home: Home, tmp_path: Path) -> None:
    write_notebook(
        tmp_path / "train.ipynb",
        "%load_ext bt_jupyter\n%bt_project browser",
        "%%bt_train --name browser-run\n"
        "import time\n"
        "for step in range(600):\n"
        "    print(f'step {step}', flush=True)\n"
        "    time.sleep(0.2)",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "train.ipynb") as page,
    ):
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
        dialog = page.locator(".jp-Dialog")  # JupyterLab's dialog, as in the job panel
        dialog.wait_for(timeout=10_000)
        assert "Stop training job?" in dialog.inner_text()
        dialog.locator("button.jp-mod-accept").click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=status]').textContent === 'STOPPED'",
            timeout=60_000,
        )
        time.sleep(0.5)  # let the last log lines render before the picture
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-widget-stopped.png"), full_page=True)
        text = logs.inner_text()
        assert "step 0" in text
        assert "Stop requested" in text
