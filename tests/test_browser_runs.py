"""Several runs in a real browser: the sweep widget, ``%bt_compare``, and a job widget's
checkpoints brought back into the notebook (JupyterLab in Debian's chromium, Playwright).
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bt_jupyter.local.home import Home
from tests.browser import (
    ARTIFACTS,
    expect,
    jupyterlab,
    needs_chromium,
    notebook_page,
    write_notebook,
)
from tests.test_browser_widget import quiet_lab  # noqa: F401  (the fixture)

pytestmark = [needs_chromium, pytest.mark.usefixtures("quiet_lab")]

VALUES = "lr = 1e-3\nlora_r = 4\nsteps = 12"
CELL = (
    "import os, time\n"
    "from bt_jupyter.runtime import log_metrics\n"
    "for step in range(steps):\n"
    "    log_metrics(step=step, loss=lr * 1000 / (step + 1) + lora_r / 100)\n"
    "    time.sleep(0.05)\n"
    "os.makedirs(os.environ['BT_CHECKPOINT_DIR'] + '/checkpoint-1', exist_ok=True)\n"
    "open(os.environ['BT_CHECKPOINT_DIR'] + '/checkpoint-1/weights.txt', 'w').write(str(lr))"
)


def _all_ended(page: object, title: str, count: int) -> None:
    """Wait until the runs widget titled ``title`` shows ``count`` rows, all ended."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "([title, n]) => [...document.querySelectorAll('.btj-runs')].some(w => {"
        " if (!w.innerText.includes(title)) return false;"
        " const rows = [...w.querySelectorAll('[data-testid=run-row]')];"
        " return rows.length === n"
        "   && rows.every(r => /COMPLETED|STOPPED|FAILED/.test(r.innerText)); })",
        arg=[title, count],
        timeout=120_000,
    )


@pytest.mark.timeout(300)
def test_the_sweep_widget_overlays_its_runs_ranks_them_and_stops_them(
    local_home: Home, tmp_path: Path
) -> None:
    write_notebook(
        tmp_path / "sweep.ipynb",
        "%load_ext bt_jupyter\n%bt_project browser-sweep",
        VALUES,
        f"%%bt_train --name grid --sweep lr=1e-3,3e-3 --sweep lora_r=4,8 "
        f"--sweep-max-parallel 2\n{CELL}",
        f"%%bt_train --name slow --sweep steps=4000,4001\n{CELL}",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "sweep.ipynb", height=1400) as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        grid = page.locator(".btj-runs", has_text="Sweep of 4 runs").first
        grid.wait_for(timeout=90_000)
        _all_ended(page, "Sweep of 4 runs", 4)
        assert "4 ended" in grid.locator("[data-testid=runs-title]").inner_text()
        rows = grid.locator("[data-testid=run-row]")
        assert rows.count() == 4
        best = grid.locator("tr.btj-best")
        assert best.count() == 1
        assert "grid lr=0.001 lora_r=4" in best.inner_text()  # lowest loss
        # one chart per metric, a series per run
        chart = grid.locator("[data-testid=chart-loss]")
        chart.wait_for(timeout=30_000)
        assert chart.locator(".u-legend .u-series").count() == 1 + 4
        # what differed: the swept values, the rest hidden until asked
        facts = grid.locator("[data-testid=facts]")
        assert "value lr" in facts.inner_text()
        assert "value steps" not in facts.inner_text()
        grid.locator("[data-testid=only-differences]").uncheck()
        assert "value steps" in facts.inner_text()
        grid.locator("[data-testid=only-differences]").check()
        grid.screenshot(path=str(ARTIFACTS / "sweep-widget.png"))
        # "Deploy best" asks first (JupyterLab's dialog), then names the run it chose
        grid.locator("[data-testid=deploy-best]").click()
        page.locator(".jp-Dialog .jp-mod-accept").click()
        message = grid.locator("[data-testid=runs-message]")
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=runs-message]')]"
            ".some(m => /grid lr=0.001 lora_r=4 .* not a Hugging Face model/.test(m.innerText))",
            timeout=30_000,
        )
        assert "grid lr=0.001 lora_r=4" in message.inner_text()
        # the slow sweep: Stop all, confirmed, stops both runs
        slow = page.locator(".btj-runs", has_text="Sweep of 2 runs").first
        slow.scroll_into_view_if_needed()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.btj-runs')].some(w => "
            "/slow steps=4000/.test(w.innerText) && /RUNNING/.test(w.innerText))",
            timeout=90_000,
        )
        slow.locator("[data-testid=stop-all]").click()
        page.locator(".jp-Dialog .jp-mod-accept").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.btj-runs')].some(w => "
            "/slow steps=4000/.test(w.innerText)"
            " && (w.innerText.match(/STOPPED/g) || []).length >= 2)",
            timeout=60_000,
        )
        slow.screenshot(path=str(ARTIFACTS / "sweep-stopped.png"))


@pytest.mark.timeout(300)
def test_compare_view_and_checkpoints_back_in_the_notebook(
    local_home: Home, tmp_path: Path
) -> None:
    write_notebook(
        tmp_path / "compare.ipynb",
        "%load_ext bt_jupyter\n%bt_project browser-compare",
        VALUES,
        f"%%bt_train --name small-lr --wait -o a\n{CELL}",
        "lr = 4e-3",
        f"%%bt_train --name big-lr --env SEED=7 --wait -o b\n{CELL}",
        "%bt_compare {a.id} {b.id}",
        "a",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "compare.ipynb", height=1400) as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        view = page.locator(".btj-runs").first
        view.wait_for(timeout=120_000)
        _all_ended(page, "2 runs compared", 2)
        assert "2 runs compared" in view.locator("[data-testid=runs-title]").inner_text()
        facts = view.locator("[data-testid=facts]").inner_text()
        assert "value lr" in facts
        assert "--env" in facts
        assert "SEED=7" in facts
        assert view.locator("tr.btj-differs").count() >= 3  # lr, --name, --env, metrics
        view.locator("[data-testid=chart-loss]").wait_for(timeout=30_000)
        view.screenshot(path=str(ARTIFACTS / "compare-view.png"))
        # the job widget of `a`: Download, then "Load in notebook" inserts a cell
        job = page.locator(".btj-live", has_text="small-lr").last
        job.locator("[data-testid=download-checkpoint]").first.click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=checkpoint-fetched]')]"
            ".some(c => /bt_checkpoints/.test(c.innerText))",
            timeout=30_000,
        )
        downloaded = list(tmp_path.glob("bt_checkpoints/*/checkpoint-1/weights.txt"))
        assert [p.read_text() for p in downloaded] == ["0.001"]
        cells_before = page.locator(".jp-Notebook .jp-Cell").count()
        job.locator("[data-testid=load-checkpoint]").first.click()
        page.wait_for_function(
            "(n) => document.querySelectorAll('.jp-Notebook .jp-Cell').length === n",
            arg=cells_before + 1,
            timeout=10_000,
        )
        inserted = page.locator(".jp-Notebook .jp-Cell", has_text="load_hf(checkpoint)")
        assert inserted.count() == 1
        assert '.checkpoint("checkpoint-1")' in inserted.inner_text()
        job.screenshot(path=str(ARTIFACTS / "widget-checkpoint-actions.png"))


@pytest.mark.timeout(300)
def test_a_multinode_jobs_widget_plots_the_leader_and_offers_the_other_nodes(
    local_home: Home, tmp_path: Path
) -> None:
    """Every node of a multi-node Trainer reports (tagged with its node): the widget
    shows node 0's curves and offers the others."""
    write_notebook(
        tmp_path / "nodes.ipynb",
        "%load_ext bt_jupyter\n%bt_project browser-nodes",
        "%%bt_train --name two-nodes --nodes 2\n"
        "import os\n"
        "from bt_jupyter.trackers import emit\n"
        "rank = int(os.environ['BT_NODE_RANK'])\n"
        "for step in range(5):\n"
        "    emit(step, {'loss': (1 + rank) / (step + 1)})",
    )
    with (
        jupyterlab(local_home, tmp_path) as lab,
        notebook_page(lab, "nodes.ipynb", height=1200) as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        widget = page.locator(".btj-live", has_text="two-nodes").first
        expect(widget.locator("[data-testid=status]")).to_have_text("COMPLETED", timeout=120_000)
        legend = widget.locator("[data-testid=chart-loss] .u-legend .u-series")
        expect(legend).to_have_count(2)  # x and node 0's loss
        select = widget.locator("[data-testid=metric-node]")
        expect(select).to_be_visible()
        assert select.locator("option").all_inner_texts() == [
            "metrics: all nodes",
            "metrics: node 0",
            "metrics: node 1",
        ]
        select.select_option("all")
        expect(legend).to_have_count(3)  # a series per node
        select.select_option("1")
        expect(legend).to_have_count(2)
        widget.screenshot(path=str(ARTIFACTS / "widget-metrics-per-node.png"))


@pytest.mark.timeout(300)
def test_without_the_labextension_load_in_notebook_shows_and_copies_the_code(
    local_home: Home, tmp_path: Path
) -> None:
    """VS Code, Colab and other frontends render the widget with no labextension: the
    code is copied and shown, and no cell appears from nowhere."""
    write_notebook(
        tmp_path / "solo.ipynb",
        "%load_ext bt_jupyter\n%bt_project browser-solo",
        VALUES,
        f"%%bt_train --name solo\n{CELL}",
    )
    with (
        jupyterlab(local_home, tmp_path, without_labextension=True) as lab,
        notebook_page(lab, "solo.ipynb", height=1200) as page,
    ):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        widget = page.locator(".btj-live", has_text="solo").first
        expect(widget.locator("[data-testid=status]")).to_have_text("COMPLETED", timeout=120_000)
        cells = page.locator(".jp-Notebook .jp-Cell").count()
        widget.locator("[data-testid=load-checkpoint]").first.click()
        snippet = widget.locator("[data-testid=load-snippet]")
        expect(snippet.locator("pre")).to_contain_text("load_hf(checkpoint)")
        expect(snippet).to_contain_text('.checkpoint("checkpoint-1")')
        expect(snippet).to_contain_text("paste")
        assert page.locator(".jp-Notebook .jp-Cell").count() == cells
        widget.screenshot(path=str(ARTIFACTS / "widget-load-snippet.png"))
