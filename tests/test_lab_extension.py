"""The JupyterLab extension in a real browser (Debian's chromium, driven by Playwright).

A plain code cell is sent with the notebook toolbar's "Run Cell on Baseten" button (which
writes the ``%%bt_train`` line from the settings), the job shows up RUNNING in the Training
sidebar and as "1 training" in the status bar, its panel streams the cell's prints, Stop
(confirmed) ends it, and panel, sidebar and status bar all say so. A screenshot is saved to
``test-artifacts/jupyterlab-sidebar.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_core.paths import jupyter_path

from bt_jupyter.local.home import Home
from tests.browser import ARTIFACTS, jupyterlab, needs_chromium, notebook_page, write_notebook
from tests.helpers import running_service

PROJECT = "lab-sidebar"


def _labextension_installed() -> bool:
    return any(
        (Path(root) / "bt-jupyter" / "package.json").is_file()
        for root in jupyter_path("labextensions")
    )


pytestmark = [
    needs_chromium,
    pytest.mark.skipif(
        not _labextension_installed(),
        reason="the bt-jupyter labextension is not installed (pip install -e . needs Node 20+)",
    ),
]


@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A service of this module's own (overrides the session's): the sidebar and the
    status bar then show this test's job only, whatever other tests left running."""
    home = Home(tmp_path_factory.mktemp("bt_home_lab"))
    with running_service(home):
        yield home


@pytest.fixture
def lab_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """User settings and workspaces of this test only.

    The settings make the sidebar poll every second and give "Run Cell on Baseten" a project.
    """
    settings = tmp_path / "lab-settings"
    (settings / "bt-jupyter").mkdir(parents=True)
    (settings / "bt-jupyter" / "plugin.jupyterlab-settings").write_text(
        json.dumps({"defaultProject": PROJECT, "pollInterval": 1})
    )
    # no "get notified about Jupyter news?" prompt over the screenshot
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    ).write_text(json.dumps({"fetchNews": "false"}))
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "lab-workspaces"))


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("lab_dirs")
def test_training_sidebar_follows_and_stops_a_job(local_home: Home, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    write_notebook(
        tmp_path / "sidebar.ipynb",
        "import time\n"
        "for step in range(300):\n"
        "    print(f'step {step}', flush=True)\n"
        "    time.sleep(0.2)",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "sidebar.ipynb", height=900) as page,
    ):
        # The sidebar's tab in the left bar, as a user opens it.
        page.locator(".jp-SideBar.jp-mod-left [data-id='bt-jupyter-training']").click()
        sidebar = page.locator("#bt-jupyter-training")
        expect(sidebar.get_by_text("Training", exact=True)).to_be_visible(timeout=30_000)

        # "Run Cell on Baseten" is in the cell's context menu and the notebook toolbar.
        cell = page.locator(".jp-Notebook .jp-CodeCell").first
        cell.click(button="right")
        menu_item = page.locator(".lm-Menu-itemLabel", has_text="Run Cell on Baseten")
        expect(menu_item).to_be_visible(timeout=10_000)
        page.keyboard.press("Escape")
        cell.click()
        page.locator("[data-command='bt-jupyter:run-cell-on-baseten']").click()
        source = page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.activeCell"
            ".model.sharedModel.getSource()"
        )
        assert source.startswith(f"%%bt_train --backend local --project {PROJECT}\n")

        job_row = sidebar.locator("[data-testid=bt-job]").first
        expect(job_row.locator("[data-testid=bt-status]")).to_have_text("RUNNING", timeout=60_000)
        expect(sidebar.locator("[data-testid=bt-project]").first).to_contain_text(PROJECT)
        status_item = page.locator("[data-testid=bt-statusbar]")
        expect(status_item).to_have_text("⚙ 1 training", timeout=10_000)

        job_row.click()
        panel = page.locator("[data-testid=bt-job-detail]")
        logs = panel.locator("[data-testid=bt-logs]")
        expect(logs).to_contain_text(re.compile(r"step [3-9]"), timeout=60_000)
        expect(panel.locator("[data-testid=bt-history]")).to_contain_text("RUNNING")

        panel.locator("[data-testid=bt-stop]").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Stop job").click()
        header_status = panel.locator(".bt-JobDetail-header [data-testid=bt-status]")
        expect(header_status).to_have_text("STOPPED", timeout=60_000)
        expect(job_row.locator("[data-testid=bt-status]")).to_have_text("STOPPED", timeout=10_000)
        expect(status_item).to_have_text("⚙ 0 training", timeout=10_000)
        expect(panel.locator("[data-testid=bt-history]")).to_contain_text("STOPPED")
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-sidebar.png"))

        text = logs.inner_text()
        assert "step 0" in text
        steps = re.findall(r"step (\d+)$", text, flags=re.MULTILINE)
        assert len(steps) == len(set(steps)), "a log line was shown twice"
