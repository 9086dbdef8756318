"""Jupyter Notebook 7 in a real browser (Debian's chromium, driven by Playwright).

A ``%%bt_train`` cell runs in Notebook 7's notebook page: the job widget renders and
reaches COMPLETED with the cell's output in its log. The labextension loads there too:
the Training sidebar sits in Notebook 7's left panel and a job's panel opens in the
right one (the main area holds the notebook alone). Screenshots:
``test-artifacts/notebook7-widget.png`` and ``notebook7-sidebar-panel.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bt_jupyter.local.home import Home
from tests.browser import ARTIFACTS, KERNEL_IDLE, jupyter, needs_chromium, write_notebook
from tests.helpers import running_service
from tests.test_lab_extension import _labextension_installed

pytest.importorskip("notebook")
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = Home(tmp_path_factory.mktemp("bt_home_nb7"))
    with running_service(home):
        yield home


@pytest.fixture
def notebook7(local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Notebook 7 (``python -m notebook``) with a notebook open in chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "workspaces"))
    write_notebook(
        tmp_path / "nb7.ipynb",
        "%load_ext bt_jupyter\n%bt_project notebook7",
        "%%bt_train --name nb7\nfor i in range(3):\n    print(f'hello from notebook 7 #{i}')",
        "%%bt_train --name nb7-long\nprint('\\n'.join(f'line {i:04d}' for i in range(1200)))",
        "n = 1",
        "%%bt_train -p nb7-sweep --name nb7s --sweep n=2,4\n"
        "from bt_jupyter.runtime import log_metrics\n"
        "for i in range(n):\n    log_metrics(step=i, loss=n / (i + 1))",
    )
    args = "--JupyterNotebookApp.expose_app_in_browser=True"
    with jupyter("notebook", local_home, tmp_path, args) as (base, token):
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/notebooks/nb7.ipynb?token={token}")
                page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
                page.wait_for_function(KERNEL_IDLE, timeout=90_000)
                yield page
            finally:
                browser.close()


@pytest.mark.timeout(240)
def test_bt_train_widget_and_training_panel_in_notebook7(notebook7: Any) -> None:
    page = notebook7
    expect = pytest.importorskip("playwright.sync_api").expect
    assert page.evaluate("window.jupyterapp.name") == "Jupyter Notebook"
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    widget_status = page.locator("[data-testid=status]").first  # nb7's (nb7-long's follows)
    expect(widget_status).to_have_text("COMPLETED", timeout=120_000)
    logs = page.locator("[data-testid=logs]").first
    expect(logs).to_contain_text("hello from notebook 7 #2")
    page.screenshot(path=str(ARTIFACTS / "notebook7-widget.png"), full_page=True)

    if not _labextension_installed():
        pytest.skip("the labextension is not built: the widget alone was checked")
    assert page.evaluate("document.body.dataset.btJupyterSidebar") == "1"
    # the widget's "Open in Training sidebar" opens the job's panel (in the right area)
    page.get_by_role("button", name="Open in Training sidebar").first.click()
    panel = page.locator("[data-testid=bt-job-detail]")
    expect(panel).to_be_visible(timeout=30_000)
    page.evaluate("window.jupyterapp.commands.execute('bt-jupyter:open-sidebar')")
    sidebar = page.locator("#bt-jupyter-training")
    name = page.locator(".bt-Project-name", has_text=re.compile("^notebook7$"))
    jobs = sidebar.locator("[data-testid=bt-project]", has=name).locator("[data-testid=bt-job]")
    row = jobs.filter(has=page.locator(".bt-Job-name", has_text=re.compile("^nb7$")))
    expect(row.locator("[data-testid=bt-status]")).to_have_text("COMPLETED", timeout=30_000)
    expect(row.locator(".bt-Job-name")).to_have_text("nb7")
    row.click()
    expect(panel.locator(".bt-JobDetail-header [data-testid=bt-status]")).to_have_text(
        "COMPLETED", timeout=30_000
    )
    expect(panel.locator("[data-testid=bt-logs]")).to_contain_text("hello from notebook 7 #2")
    assert panel.is_visible()
    page.screenshot(path=str(ARTIFACTS / "notebook7-sidebar-panel.png"))

    # a longer log: its newest 500 lines, and the 500 before on request. The job must have
    # ended first: a panel opened while it prints shows its tail then follows every new line.
    long_row = jobs.filter(has=page.locator(".bt-Job-name", has_text="nb7-long"))
    expect(long_row.locator("[data-testid=bt-status]")).to_have_text("COMPLETED", timeout=90_000)
    long_row.click()
    long_panel = page.locator("[data-testid=bt-job-detail]", has_text="nb7-long")
    logs = long_panel.locator("[data-testid=bt-logs]")
    expect(logs).to_contain_text("line 1199", timeout=60_000)
    assert "line 0700" not in logs.inner_text()
    long_panel.locator("[data-testid=bt-logs-earlier]").click()
    expect(logs).to_contain_text("line 0700")
    page.screenshot(path=str(ARTIFACTS / "notebook7-logs-earlier.png"))

    # the sweep widget renders in Notebook 7 too: its runs, their curves, what differed
    sweep = page.locator(".btj-runs")
    sweep.scroll_into_view_if_needed()
    expect(sweep.locator("[data-testid=run-row]", has_text="COMPLETED")).to_have_count(
        2, timeout=60_000
    )
    expect(sweep.locator("[data-testid=chart-loss]")).to_be_visible()
    expect(sweep.locator("[data-testid=facts]")).to_contain_text("value n")
    sweep.screenshot(path=str(ARTIFACTS / "notebook7-sweep.png"))
