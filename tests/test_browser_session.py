"""A live session in a real browser (JupyterLab, Debian's chromium, Playwright): the
session widget with its idle countdown, and a remote cell's output streaming into the
notebook as the node prints it. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bt_jupyter.jobs import Client
from bt_jupyter.local.home import Home
from tests.browser import ARTIFACTS, jupyterlab, needs_chromium, notebook_page, write_notebook
from tests.test_browser_widget import quiet_lab  # noqa: F401  (the fixture)

pytestmark = [needs_chromium, pytest.mark.usefixtures("quiet_lab")]

STREAM = (
    "%%bt_remote\n"
    "import time\n"
    "for i in range(6):\n"
    "    print('remote step', i, flush=True)\n"
    "    time.sleep(0.7)"
)
#: The text of the notebook's cell N (its output included, even while scrolled away).
CELL_TEXT = "(n) => document.querySelectorAll('.jp-Cell')[n].textContent"
RICH = (
    "%%bt_remote\n"
    "from IPython.display import HTML\n"
    "HTML('<b data-testid=\"remote-html\">rendered from node 0</b>')"
)


@contextmanager
def ended_sessions(home: Home, project: str) -> Iterator[None]:
    """Whatever happens in the browser, the project's jobs end with the test."""
    try:
        yield
    finally:
        with Client.local(home.root) as client:
            for job in client.jobs(project=project):
                if not job.status.is_terminal:
                    job.stop()


@pytest.mark.timeout(300)
def test_session_widget_and_a_remote_cells_streamed_output(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASETEN_SSH_DIR", str(tmp_path / "ssh"))
    write_notebook(
        tmp_path / "live.ipynb",
        "%load_ext bt_jupyter\n%bt_project browser-live",
        "%bt_session start --timeout 100s -o session",
        STREAM,
        RICH,
        "%bt_session stop",
    )
    with (
        ended_sessions(local_home, "browser-live"),
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "live.ipynb") as page,
    ):
        run = "window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')"
        page.evaluate(run)
        page.evaluate(run)
        widget = page.locator(".btj").first
        widget.locator("[data-testid=live-session]").wait_for(timeout=60_000)
        assert "Live session" in widget.locator("[data-testid=live-session]").inner_text()
        # not awaited: the command's promise settles only when the cell is done
        page.evaluate(f"() => {{ {run}; }}")  # the streaming cell
        outputs = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea")
        # streamed: the first line shows while the node still works on the last
        texts = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            texts.append(page.evaluate(CELL_TEXT, 2))
            if "remote step 5" in texts[-1]:
                break
            page.wait_for_timeout(100)
        partial = [t for t in texts if "remote step 0" in t and "remote step 5" not in t]
        assert partial, texts[-3:]
        assert "remote step 3" in (outputs.text_content() or "")
        page.evaluate(run)  # rich output
        page.locator("[data-testid=remote-html]").wait_for(timeout=60_000)
        # idle again, with less than two minutes left: the widget warns
        widget.locator("[data-testid=live-warning]").wait_for(timeout=30_000)
        assert "stops in" in widget.locator("[data-testid=live-warning]").inner_text()
        page.screenshot(path=str(ARTIFACTS / "live-session.png"), full_page=True)
        widget.scroll_into_view_if_needed()
        widget.locator("[data-testid=live-session]").screenshot(
            path=str(ARTIFACTS / "live-session-clock.png")
        )
        widget.screenshot(path=str(ARTIFACTS / "live-session-widget.png"))
        page.evaluate(run)  # %bt_session stop
        page.wait_for_function(
            "() => document.querySelectorAll('.jp-Cell')[4].textContent.includes('stopped')",
            timeout=60_000,
        )
        widget.locator("[data-testid=status]", has_text="STOPPED").wait_for(timeout=60_000)
        assert widget.locator("[data-testid=live-session]").inner_text() == ""
