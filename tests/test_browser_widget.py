"""The live job widget in a real browser (JupyterLab in Debian's chromium, Playwright).

Follow after Run All (the end of the log is in view when the widget scrolls into view),
no blank ``[0]`` rows, metric lines hidden until asked for, the uPlot chart's axes and
hover values (also in the dark theme), the in-widget confirm, a kernel restart turning
the widget "disconnected", and a saved notebook read without its kernel. Screenshots go
to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from tests.browser import (
    ARTIFACTS,
    KERNEL_IDLE,
    expect,
    jupyterlab,
    needs_chromium,
    notebook_page,
    write_notebook,
)

pytestmark = [needs_chromium, pytest.mark.usefixtures("quiet_lab")]


@pytest.fixture
def quiet_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lab settings of this test only: no "get notified about Jupyter news?" prompt over
    the screenshots."""
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "lab-settings"))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "lab-workspaces"))


TRAIN = (
    "%%bt_train --name follow-run\n"
    "import time\n"
    "from bt_jupyter.runtime import log_metrics\n"
    "for step in range(40):\n"
    "    print(f'step {step}')\n"
    "    print('')\n"
    "    log_metrics(step=step, loss=2 / (step + 1), lr=0.001 * (step + 1))\n"
    "    time.sleep(0.05)\n"
    "print('training done')"
)
#: The failing job's name, exactly (no other widget's title matches).
FAILS = re.compile(r"^fails$")
#: An output taller than the window after the widget: Run All leaves the widget off screen.
SPACER = "print('\\n'.join(f'spacer {i}' for i in range(150)))"
WIDGET = ".btj"
FOLLOWED = (
    "() => { const b = document.querySelector('[data-testid=logs]');"
    " return b.clientHeight > 0 && b.scrollTop + b.clientHeight >= b.scrollHeight - 2; }"
)


def _status_is(page: Any, status: str, timeout: int = 90_000) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=status]')?.textContent === '{status}'",
        timeout=timeout,
    )


def _marker(page: Any) -> str:
    """The (smoothed) loss series' colour, as uPlot's legend marker shows it."""
    return str(
        page.evaluate(
            "() => getComputedStyle(document.querySelector("
            "'[data-testid=chart-loss] .u-legend .u-series:last-child .u-marker')).borderColor"
        )
    )


def _luminance(page: Any, script: str) -> float:
    """Relative luminance (0 dark .. 1 light) of a CSS colour the page computes."""
    rgb = page.evaluate(
        "(s) => { const d = document.createElement('div'); d.style.color = eval(s);"
        " document.body.append(d); const c = getComputedStyle(d).color; d.remove();"
        " return c.match(/[\\d.]+/g).slice(0, 3).map(Number); }",
        script,
    )
    r, g, b = (v / 255 for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.timeout(300)
def test_run_all_follows_to_the_end_and_the_chart_has_axes_and_hover_values(
    local_home: Home, tmp_path: Path
) -> None:
    write_notebook(
        tmp_path / "follow.ipynb",
        "%load_ext bt_jupyter\n%bt_project widget-browser",
        TRAIN,
        SPACER,
        "%%bt_train --name fails\ndef load(batch):\n    raise ValueError(f'bad batch {batch}')\n"
        "load(3)",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "follow.ipynb", height=900) as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.locator("[data-testid=logs]").first.wait_for(state="attached", timeout=90_000)
        page.evaluate("document.querySelector('.btj').dataset.probe = 'first view'")
        _status_is(page, "COMPLETED")
        # the kernel updates the output's saved state (static HTML) at each status and at
        # the end; JupyterLab keeps showing the same live view (no redraw, scroll kept)
        widget = page.locator(".btj[data-final='1']", has_text="follow-run")
        widget.wait_for(state="attached", timeout=30_000)
        assert widget.get_attribute("data-probe") == "first view"
        widget.locator("[data-testid=logs]").scroll_into_view_if_needed()
        page.wait_for_function(FOLLOWED, timeout=10_000)
        logs = widget.locator("[data-testid=logs]")
        text = logs.inner_text()
        assert text.rstrip().endswith("Job COMPLETED"), text[-300:]
        page.screenshot(path=str(ARTIFACTS / "widget-follow-completed.png"))
        rows = text.splitlines()
        assert "[0] step 39" in rows
        assert "[0] training done" in rows
        assert not [r for r in rows if r.strip() in ("[0]", "")], "blank lines shown as rows"
        assert "[bt-metric]" not in text  # hidden until asked for
        widget.locator("[data-testid=show-metrics]").check()
        assert "[bt-metric]" in logs.inner_text()
        widget.locator("[data-testid=show-metrics]").uncheck()
        widget.locator("[data-testid=show-times]").check()
        assert logs.inner_text().splitlines()[-1][:2].isdigit()  # "12:34:56.789 [runner] ..."

        # the chart: one uPlot per metric, axes with tick labels, values on hover
        chart = widget.locator("[data-testid=chart-loss]")
        chart.scroll_into_view_if_needed()
        expect(widget.locator("[data-testid=chart-lr]")).to_have_count(1)  # drawn a moment
        expect(chart.locator(".u-axis")).to_have_count(2)  # after the metrics arrive
        over = chart.locator(".u-over")
        box = over.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.02, box["y"] + box["height"] / 2)
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        values = chart.locator(".u-legend .u-value")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=chart-loss] .u-legend .u-value')]"
            ".every(v => /\\d/.test(v.textContent))",
            timeout=5_000,
        )
        step, loss = (int(float(values.nth(0).inner_text())), float(values.nth(1).inner_text()))
        assert 10 <= step <= 30, step
        assert loss == pytest.approx(2 / (step + 1), rel=1e-3)
        page.screenshot(path=str(ARTIFACTS / "widget-chart-hover.png"))
        assert _marker(page) not in ("", "rgb(0, 0, 0)", "rgba(0, 0, 0, 0)")  # themed stroke
        widget.locator("[data-testid=log-scale]").check()
        widget.locator("[data-testid=smoothing]").fill("0.6")
        assert chart.locator(".u-legend .u-series").count() == 3  # step, raw, smoothed

        # each node's CPU and memory over time (small charts; no GPU here: none drawn)
        widget.locator("summary", has_text="System:").click()
        system = widget.locator("[data-testid=system-charts]")
        system.locator("[data-testid='chart-CPU %'] .u-axis").first.wait_for(timeout=10_000)
        assert system.locator("[data-testid='chart-memory GB']").count() == 1
        assert system.locator("[data-testid^='chart-GPU']").count() == 0
        system.screenshot(path=str(ARTIFACTS / "widget-system-charts.png"))

        # dark theme: the chart's text follows it
        light_fg = _luminance(page, "getComputedStyle(document.querySelector('.btj')).color")
        page.evaluate(
            "window.jupyterapp.commands.execute('apputils:change-theme',"
            " {theme: 'JupyterLab Dark'})"
        )
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_timeout(500)  # the theme's CSS applied, the chart redrawn
        dark_fg = _luminance(page, "getComputedStyle(document.querySelector('.btj')).color")
        legend = _luminance(
            page,
            "getComputedStyle(document.querySelector('[data-testid=chart-loss] .u-legend')).color",
        )
        assert light_fg < 0.3 < 0.6 < dark_fg
        assert legend > 0.6
        assert _luminance(page, repr(_marker(page))) > 0.2  # the line is seen on dark
        chart.scroll_into_view_if_needed()
        widget.screenshot(path=str(ARTIFACTS / "widget-chart-dark.png"))

        # the failed job's widget: its status, the error and the notebook's own lines
        failed = page.locator(".btj", has=page.locator(".btj-title b", has_text=FAILS))
        failed.locator("[data-testid=status]", has_text="FAILED").wait_for(timeout=60_000)
        failed.scroll_into_view_if_needed()
        expect(failed.locator("[data-testid=logs]")).to_contain_text(
            "ValueError: bad batch 3", timeout=30_000
        )
        expect(failed.locator(".btj-error")).to_contain_text(
            "exited with code 1: ValueError: bad batch 3", timeout=30_000
        )
        failed.screenshot(path=str(ARTIFACTS / "widget-failed.png"))


@pytest.mark.timeout(300)
def test_a_kernel_restart_leaves_a_disconnected_widget_that_reads_as_saved_after_reload(
    local_home: Home, client: ApiClient, tmp_path: Path
) -> None:
    write_notebook(
        tmp_path / "restart.ipynb",
        "%load_ext bt_jupyter\n%bt_project widget-restart",
        "%%bt_train --name restart-run\n"
        "import time\n"
        "for step in range(900):\n"
        "    print(f'step {step}', flush=True)\n"
        "    time.sleep(0.2)",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "restart.ipynb") as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        _status_is(page, "RUNNING")
        widget = page.locator(WIDGET)
        job_id = widget.locator("[data-testid=job-id]").inner_text()
        # Recreate asks first, with JupyterLab's dialog (as the job panel does); Cancel
        # changes nothing
        widget.locator("[data-testid=recreate]").click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=10_000)
        assert "Recreate job?" in dialog.inner_text()
        assert f"same settings as {job_id}" in dialog.inner_text()
        assert widget.locator("[data-testid=confirm] button").count() == 0
        page.screenshot(path=str(ARTIFACTS / "widget-confirm-recreate.png"))
        dialog.locator("button.jp-mod-reject").click()
        dialog.wait_for(state="detached", timeout=10_000)
        assert widget.locator("[data-testid=job-id]").inner_text() == job_id
        try:
            page.evaluate(
                "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()"
            )
            banner = widget.locator("[data-testid=disconnected]")
            banner.wait_for(state="visible", timeout=30_000)
            assert f"re-attach with %bt_job {job_id}" in " ".join(banner.inner_text().split())
            assert widget.locator("[data-testid=stop]").is_disabled()
            elapsed = widget.locator("[data-testid=meta]").inner_text()
            page.wait_for_timeout(2_000)
            assert widget.locator("[data-testid=meta]").inner_text() == elapsed, "still ticking"
            page.screenshot(path=str(ARTIFACTS / "widget-disconnected.png"))

            # saved and reloaded: the saved output carries the job's last known state as
            # HTML (what nbconvert, GitHub and an untrusted notebook show), and JupyterLab
            # shows it in place of "model not found" (the labextension's saved-widget
            # fallback), as the new kernel has no such widget
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function(
                "() => !window.jupyterapp.shell.currentWidget.context.model.dirty"
            )
            saved = nbformat.read(tmp_path / "restart.ipynb", as_version=4)
            (output,) = saved.cells[1].outputs
            assert "restart-run" in output["data"]["text/html"]
            assert f"%bt_job {job_id}" in output["data"]["text/html"]
            page.reload()
            page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
            page.wait_for_function(KERNEL_IDLE, timeout=90_000)
            reloaded = page.locator(".jp-OutputArea-output", has_text="re-attach with")
            reloaded.wait_for(timeout=30_000)
            text = reloaded.inner_text()
            assert f"%bt_job {job_id}" in text
            assert "restart-run" in text
            assert "RUNNING" in text  # the state saved at the last status, not at CREATED
            assert "model not found" not in text
            assert "Loading widget" not in text
            page.screenshot(path=str(ARTIFACTS / "widget-reloaded.png"))
        finally:
            project = client.upsert_project("widget-restart")
            client.stop_job(project.id, job_id)


@pytest.mark.timeout(300)
def test_a_saved_notebook_shows_the_job_as_readable_output_without_its_kernel(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run headless (nbclient, as papermill does), save, open in JupyterLab with no kernel
    holding the widget: the output reads as the job's last known state."""
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(c)
        for c in [
            "%load_ext bt_jupyter\n%bt_project widget-saved",
            TRAIN.replace("--name follow-run", "-o job --name saved-run"),
            "job.wait(timeout=120)\nprint('waited')",
        ]
    ]
    NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    nbformat.write(nb, tmp_path / "saved.ipynb")
    (display,) = [o for o in nb.cells[1].outputs if o["output_type"] == "display_data"]
    assert "COMPLETED" in display["data"]["text/html"]
    from nbconvert import HTMLExporter

    without_state = nbformat.from_dict(nb)  # as GitHub and plain nbconvert read it
    without_state.metadata.pop("widgets", None)
    exported, _ = HTMLExporter().from_notebook_node(without_state)
    assert "final metrics: loss = 0.05" in exported  # the static summary, not a script
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "saved.ipynb") as page,
    ):
        output = page.locator(".jp-OutputArea-output", has_text="re-attach with")
        output.wait_for(timeout=30_000)
        text = output.inner_text()
        assert "COMPLETED" in text
        assert "final metrics: loss = 0.05" in text
        assert "[node 0] training done" in text
        output.screenshot(path=str(ARTIFACTS / "widget-saved-readable.png"))


@pytest.mark.timeout(300)
def test_the_widget_alone_is_complete_and_out_without_wait_binds(
    local_home: Home, tmp_path: Path
) -> None:
    """VS Code and Colab-style frontends render ipywidgets but not labextensions: with ours
    disabled, the widget still follows, charts, confirms (its own dialog) and says its
    ``--out`` values were bound, which the next cell can use without ``--wait``."""
    write_notebook(
        tmp_path / "alone.ipynb",
        "%load_ext bt_jupyter\n%bt_project widget-alone",
        "%%bt_train --name outjob --out final -o j\n"
        "from bt_jupyter.runtime import log_metrics\n"
        "for step in range(5):\n"
        "    log_metrics(step=step, loss=1 / (step + 1))\n"
        "final = {'loss': 0.2, 'note': 'from the node'}",
        "print('final is', final)",
    )
    with (
        jupyterlab(local_home, tmp_path, without_labextension=True) as lab,
        notebook_page(lab, "alone.ipynb") as page,
    ):
        assert page.evaluate("document.body.dataset.btJupyterSidebar") is None
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")
        _status_is(page, "COMPLETED")
        widget = page.locator(WIDGET).first
        page.wait_for_function(
            "() => document.querySelector('[data-testid=outputs]')?.textContent.trim()"
            " === 'outputs: final → bound'",
            timeout=30_000,
        )
        expect(widget.locator("[data-testid=chart-loss] .u-axis")).to_have_count(2)
        assert widget.locator("[data-testid=open-sidebar]").is_hidden()
        assert page.locator(".jp-Dialog").count() == 0

        # its own confirm, as no JupyterLab dialog answers it
        widget.locator("[data-testid=recreate]").click()
        dialog = widget.locator("[data-testid=confirm]")
        assert "Recreate job?" in dialog.inner_text()
        page.screenshot(path=str(ARTIFACTS / "widget-alone-confirm.png"))
        dialog.locator("[data-testid=confirm-cancel]").click()
        assert dialog.inner_text() == ""

        # the next cell sees the bound value (the job completed while the kernel idled)
        page.evaluate(
            "() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 2;"
            " return window.jupyterapp.commands.execute('notebook:run-cell'); }"
        )
        printed = page.locator(".jp-OutputArea-output", has_text="final is")
        printed.wait_for(timeout=30_000)
        assert "'note': 'from the node'" in printed.inner_text()
        page.screenshot(path=str(ARTIFACTS / "widget-out-bound.png"))


@pytest.mark.timeout(300)
def test_the_cache_table_sorts_by_a_clicked_column(local_home: Home, tmp_path: Path) -> None:
    write_notebook(
        tmp_path / "cache.ipynb",
        "%load_ext bt_jupyter\n%bt_project widget-cache",
        "%%bt_train --cache --wait\n"
        "import os\n"
        "root = os.environ['BT_PROJECT_CACHE_DIR']\n"
        "os.makedirs(f'{root}/hub/tiny', exist_ok=True)\n"
        "open(f'{root}/hub/tiny/weights.bin', 'wb').write(b'0' * 300_000)\n"
        "open(f'{root}/notes.txt', 'w').write('small')",
        "%bt_cache",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "cache.ipynb") as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        table = page.locator("table.btj-cache")
        table.wait_for(timeout=120_000)
        first_path = (
            "() => document.querySelector('table.btj-cache tr:nth-child(2) td').textContent"
        )
        assert page.evaluate(first_path) == "hub"  # by path first: hub < notes.txt
        table.locator("th[data-sort=size_bytes]").click()  # biggest first
        assert page.evaluate(first_path) == "hub"
        assert table.locator("tr:nth-child(2) td:nth-child(2)").inner_text().endswith(" KB")
        table.locator("th[data-sort=size_bytes]").click()  # then smallest first
        assert page.evaluate(first_path) != "hub"
        table.screenshot(path=str(ARTIFACTS / "cache-table.png"))


@pytest.mark.timeout(300)
def test_the_widget_lists_the_files_the_cell_wrote_and_shows_the_jobs_warnings(
    local_home: Home, tmp_path: Path
) -> None:
    """What the cell saved in its working folder is listed with Download and Load in
    notebook; a ``[bt-warning]`` of the job's runtime stands above the log."""
    write_notebook(
        tmp_path / "files.ipynb",
        "%load_ext bt_jupyter\n%bt_project widget-files",
        "%%bt_train --name writes-files\n"
        "import os\n"
        "os.makedirs('tiny_model', exist_ok=True)\n"
        "open('tiny_model/config.json', 'w').write('{\"hidden\": 4}')\n"
        "open('results.csv', 'w').write('step,loss\\n1,0.5\\n')\n"
        "print('[bt-warning] Trainer output_dir /elsewhere is outside $BT_CHECKPOINT_DIR')",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "files.ipynb") as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        _status_is(page, "COMPLETED")
        widget = page.locator(WIDGET).first
        rows = widget.locator("[data-testid=file]")
        expect(rows).to_have_count(2)
        assert rows.nth(0).inner_text().startswith("results.csv")
        assert rows.nth(1).inner_text().startswith("tiny_model/config.json")
        warning = widget.locator("[data-testid=warnings]")
        expect(warning).to_have_text(
            "⚠ Trainer output_dir /elsewhere is outside $BT_CHECKPOINT_DIR"
        )
        rows.nth(0).locator("[data-testid=download-file]").click()
        expect(rows.nth(0).locator("[data-testid=file-fetched]")).to_contain_text("in ")
        job_id = widget.locator("[data-testid=job-id]").inner_text()
        kept = tmp_path / "bt_files" / job_id / "results.csv"
        assert kept.read_text() == "step,loss\n1,0.5\n"
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(ARTIFACTS / "widget-files-and-warning.png"))
