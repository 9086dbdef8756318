"""The job panel, sidebar and status bar of the labextension in a real browser (issue 15).

- Deploy from the panel reaches ACTIVE on its own (the panel kept saying DEPLOYING while
  the server said ACTIVE), the URL is a link, the try-it box answers through the server
  extension (the service's key never reaches the page) and Stop deployment stops it.
- Two runs of one cell are told apart in the sidebar (id and "ago"), the status bar counts
  a job at once after its cell starts (it said "0 training" until the next slow poll),
  and the panel charts the job's metrics with uPlot: axes, one series per node, hover.

Screenshots: ``test-artifacts/panel-deploy-active.png``, ``panel-deploy-stopped.png``,
``panel-sidebar-reruns.png``, ``panel-chart-hover.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bt_jupyter import Client, Job, spec
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.pricing import gpu_cost_per_hour
from tests.browser import ARTIFACTS, jupyterlab, needs_chromium, notebook_page, write_notebook
from tests.helpers import INSTALL, bundle, requirements, running_service, submit, wait_for, wait_job
from tests.test_lab_extension import _labextension_installed

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(not _labextension_installed(), reason="the labextension is not built"),
]

#: The sidebar's slow poll in these tests: anything shown sooner came from the fix.
SLOW_POLL_S = 30


@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = Home(tmp_path_factory.mktemp("bt_home_panel"))
    with running_service(home):
        yield home


@pytest.fixture(scope="module")
def lab(local_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One JupyterLab for the module, polling slowly, with no news prompt."""
    root = tmp_path_factory.mktemp("lab_panel")
    settings = root / "lab-settings"
    (settings / "bt-jupyter").mkdir(parents=True)
    (settings / "bt-jupyter" / "plugin.jupyterlab-settings").write_text(
        json.dumps({"pollInterval": SLOW_POLL_S})
    )
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings))
        mp.setenv("JUPYTERLAB_WORKSPACES_DIR", str(root / "workspaces"))
        with jupyterlab(local_home, root) as server:
            _LAB_ROOTS[server[0]] = root
            yield server


#: Each lab's root folder (where the tests write their notebooks).
_LAB_ROOTS: dict[str, Path] = {}


def _fresh_workspace(lab: tuple[str, str]) -> None:
    """Forget the panels an earlier test of the module left open (the layout restorer
    would reopen them over this test's notebook)."""
    base, token = lab
    httpx.delete(f"{base}/lab/api/workspaces/default", params={"token": token})


def _api(lab: tuple[str, str], method: str, path: str, body: Any = None) -> httpx.Response:
    base, token = lab
    return httpx.request(
        method,
        f"{base}/bt-jupyter/{path}",
        params={"backend": "local"},
        headers={"Authorization": f"token {token}"},
        json=body,
        timeout=120,
    )


# --------------------------------------------------------------------------- reruns, chart

#: Records each text of the status item with the time it appeared (epoch ms).
WATCH_STATUS_ITEM = """() => {
  const item = document.querySelector('[data-testid=bt-statusbar]');
  window.__btStatus = [[Date.now(), item.textContent]];
  new MutationObserver(() => window.__btStatus.push([Date.now(), item.textContent]))
    .observe(item, {childList: true, subtree: true, characterData: true});
}"""

TWIN = (
    "%%bt_train --name twin --nodes 2\n"
    "import os, time\n"
    "from bt_jupyter.runtime import log_metrics\n"
    "rank = int(os.environ.get('BT_NODE_RANK', '0'))\n"
    "for step in range(40):\n"
    "    log_metrics(step=step, loss=(1 + rank) / (step + 1), lr=0.01 * 0.9 ** step)\n"
    "    print(f'step {step}', flush=True)\n"
    "    time.sleep(0.3)\n"
)


@pytest.mark.timeout(300)
def test_reruns_told_apart_status_bar_at_once_and_chart(lab: tuple[str, str]) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    root = _LAB_ROOTS[lab[0]]
    _fresh_workspace(lab)
    write_notebook(root / "twin.ipynb", "%load_ext bt_jupyter\n%bt_project panel-twins", TWIN)
    with notebook_page(lab, "twin.ipynb", height=1100) as page:
        page.locator(".jp-SideBar.jp-mod-left [data-id='bt-jupyter-training']").click()
        sidebar = page.locator("#bt-jupyter-training")
        expect(sidebar.locator(".bt-Empty, [data-testid=bt-job]").first).to_be_visible(
            timeout=30_000
        )  # the first (slow-interval) poll is behind us
        page.evaluate(WATCH_STATUS_ITEM)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        twins = sidebar.locator("[data-testid=bt-project]", has_text="panel-twins")
        rows = twins.locator("[data-testid=bt-job]")  # (the module's other test has jobs too)
        expect(rows).to_have_count(1, timeout=90_000)
        first_id = rows.first.get_attribute("data-job-id")
        created = _api(lab, "GET", f"jobs/{first_id}").json()["job"]["created_at"]
        created_ms = datetime.fromisoformat(created).timestamp() * 1000
        # the fix: counted within a second or two of the submit, not at the next 30 s poll
        shown = wait_for(
            lambda: page.evaluate(
                "() => (window.__btStatus.find(([, text]) => text.includes('1 training'))"
                " || [null])[0]"
            ),
            SLOW_POLL_S,
            "the status bar to count the job",
            every=0.2,
        )
        assert shown - created_ms < 3000, (shown - created_ms, page.evaluate("window.__btStatus"))
        wait_for(
            lambda: (
                page.evaluate(
                    "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
                )
                == "idle"
            ),
            60,
            "the first run's cell to return",
            every=0.2,
        )
        # run the same cell again: a second job of the same name
        # the notebook's tab first (the workspace may have restored a job panel over it),
        # then the prompt, not the middle of the cell: that is the first run's widget
        page.locator(".lm-TabBar-tab", has_text="twin.ipynb").click()
        page.locator(".jp-Notebook .jp-CodeCell").nth(1).locator(".jp-InputPrompt").click()
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell')")
        expect(rows).to_have_count(2, timeout=20_000)
        ids = rows.locator("[data-testid=bt-job-id]").all_inner_texts()
        agos = rows.locator("[data-testid=bt-job-ago]").all_inner_texts()
        assert len(set(ids)) == 2, ids
        assert all(re.fullmatch(r"\d+[smhd] ago|just now", a) for a in agos), agos
        assert rows.locator(".bt-Job-name").all_inner_texts() == ["twin", "twin"]
        page.screenshot(path=str(ARTIFACTS / "panel-sidebar-reruns.png"))

        rows.first.click()
        panel = page.locator(".bt-JobPanel:not(.lm-mod-hidden) [data-testid=bt-job-detail]")
        header = panel.locator(".bt-JobDetail-header [data-testid=bt-status]")
        expect(header).to_have_text("COMPLETED", timeout=120_000)
        job_tabs = page.locator(".lm-TabBar-tab", has_text="twin ·")
        expect(job_tabs).to_have_count(1)  # one click, one panel
        expect(panel.locator("[data-testid=bt-cost]")).to_have_text("CPU only: no GPU cost")
        logs = panel.locator("[data-testid=bt-logs]")
        expect(logs).to_contain_text("step 39")
        assert "[bt-metric]" not in logs.inner_text()  # hidden by default
        panel.locator("[data-testid=bt-show-metrics]").check()
        expect(logs).to_contain_text("[bt-metric]")
        panel.locator("[data-testid=bt-show-metrics]").uncheck()
        panel.locator("[data-testid=bt-logs-search]").fill("step 3")
        expect(panel.locator(".bt-LogLine")).to_have_count(2 * 11)  # 3, 30..39 on 2 nodes
        panel.locator("[data-testid=bt-logs-node]").select_option("1")
        expect(panel.locator(".bt-LogLine")).to_have_count(11)
        nodes = panel.locator("[data-testid=bt-log-node]").all_inner_texts()
        assert {n.strip() for n in nodes} == {"1"}
        panel.locator("[data-testid=bt-logs-search]").fill("")

        chart = panel.locator("[data-testid=bt-chart][data-metric=loss]")
        expect(chart.locator("canvas")).to_have_count(1, timeout=30_000)
        assert chart.locator(".u-axis").count() >= 2  # x (step) and y, with ticks drawn
        legend = chart.locator(".u-legend .u-series")
        expect(legend).to_have_count(3)  # step + node 0 + node 1
        assert "node 1" in legend.nth(2).inner_text()
        chart.scroll_into_view_if_needed()
        box = chart.locator(".u-over").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
        page.mouse.move(box["x"] + box["width"] * 0.52, box["y"] + box["height"] * 0.5)
        value = legend.nth(1).locator(".u-value")
        expect(value).to_have_text(re.compile(r"^[0-9.e+-]+$"), timeout=5_000)
        step_value = legend.nth(0).locator(".u-value").inner_text()
        assert 10 <= int(step_value) <= 30, step_value
        page.screenshot(path=str(ARTIFACTS / "panel-chart-hover.png"), full_page=True)
        expect(job_tabs).to_have_count(1)
        # the dark theme: the charts are redrawn in its colours (no hard-coded ones)
        page.evaluate(
            "window.jupyterapp.commands.execute('apputils:change-theme',"
            " {theme: 'JupyterLab Dark'})"
        )
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=30_000)
        expect(chart.locator("canvas")).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "panel-chart-dark.png"), full_page=True)

        # the server's side: metrics with their node, the cost of a CPU job
        job_id = rows.first.get_attribute("data-job-id")
        metrics = _api(lab, "GET", f"jobs/{job_id}/metrics").json()["metrics"]
        assert {m["node"] for m in metrics} == {0, 1}
        assert len(metrics) == 80
        cost = _api(lab, "GET", f"jobs/{job_id}").json()["cost"]
        assert cost == {
            "gpu_hours": 0.0, "per_hour": 0.0, "so_far": 0.0, "source": "table", "billed": False
        }  # fmt: skip


# --------------------------------------------------------------------------- deployments


@pytest.fixture(scope="module")
def trained(local_home: Home) -> Iterator[Job]:
    """A tiny GPT trained into ``checkpoint-120`` (the Hugging Face folder Deploy serves)."""
    pytest.importorskip("transformers")
    from tests.test_deploy import TINY_GPT

    needs = requirements("torch", "tokenizers", "transformers", "safetensors")
    with Client.local(local_home.root) as bt:
        artifact = bt.api.upload_artifact(bundle({"train.py": TINY_GPT, **needs}))[0]
        project = bt.api.upsert_project(f"panel-{new_id()}")
        wire = bt.api.create_job(
            project.id,
            spec.TrainingJob(
                image=spec.Image(base_image="python:3.11-slim"),
                runtime=spec.Runtime(
                    start_commands=[INSTALL, "python train.py"],
                    checkpointing_config=spec.CheckpointingConfig(enabled=True),
                ),
            ),
            [artifact],
        )
        job = wait_job(Job(bt, wire), 300)
        assert job.status == spec.TrainingJobStatus.COMPLETED, job.error_message
        yield job


@pytest.mark.timeout(420)
def test_panel_deploy_reaches_active_answers_and_stops(
    lab: tuple[str, str], trained: Job, local_home: Home
) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    root = _LAB_ROOTS[lab[0]]
    _fresh_workspace(lab)
    write_notebook(root / "deploy.ipynb", "1 + 1")
    key = local_home.api_key()
    seen: list[str] = []
    with notebook_page(lab, "deploy.ipynb") as page:
        page.on("response", lambda r: seen.append(_body(r)) if "/bt-jupyter/" in r.url else None)
        # the widget's "Open in Training sidebar": a flag to look for, then a DOM event
        assert page.evaluate("document.body.dataset.btJupyterSidebar") == "1"
        page.evaluate(
            "id => document.dispatchEvent(new CustomEvent('bt-jupyter:open-job',"
            " {detail: {jobId: id}}))",
            trained.id,
        )
        panel = page.locator("[data-testid=bt-job-detail]")
        expect(panel.locator("[data-testid=bt-job-id]")).to_have_text(trained.id, timeout=30_000)
        tab = page.locator(".lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel")
        expect(tab).to_contain_text(trained.id[:8])
        expect(tab).to_contain_text(re.compile(r"(\d+[smhd] ago|just now)"))

        panel.locator("tr", has_text="checkpoint-120").locator("[data-testid=bt-deploy]").click()
        row = panel.locator("[data-testid=bt-deployment]").first
        status = row.locator("[data-testid=bt-deployment-status]")
        expect(status).to_have_text("DEPLOYING", timeout=30_000)
        # the fix: the panel follows the deployment to ACTIVE with no click
        expect(status).to_have_text("ACTIVE", timeout=180_000)
        link = row.locator("a[data-testid=bt-deployment-url]")
        assert (link.get_attribute("href") or "").startswith("http://127.0.0.1:")

        row.locator("[data-testid=bt-try-input]").fill("the cat")
        row.locator("[data-testid=bt-try-send]").click()
        answer = row.locator("[data-testid=bt-try-answer]")
        expect(answer).to_have_text(re.compile(r"^\s*sat"), timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "panel-deploy-active.png"), full_page=True)

        row.locator("[data-testid=bt-deployment-stop]").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Stop deployment").click()
        expect(status).to_have_text("STOPPED", timeout=60_000)
        expect(row.locator("[data-testid=bt-try-input]")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "panel-deploy-stopped.png"), full_page=True)

    assert seen, "the page talked to the server extension"
    assert not [body for body in seen if key in body], "the service's key reached the page"
    deployment_id = trained.deployments()[0].id
    # a stopped deployment, an unknown one, a bad body: one clear line each
    path = f"jobs/{trained.id}/deployments"
    stopped = _api(lab, "POST", f"{path}/{deployment_id}/call", {"input": "x"})
    assert stopped.status_code == 400, stopped.text
    assert "STOPPED" in stopped.json()["message"]
    again = _api(lab, "POST", f"{path}/{deployment_id}/stop", {})
    assert again.status_code == 409
    assert "already STOPPED" in again.json()["message"]
    unknown = _api(lab, "POST", f"{path}/nope/call", {"input": "x"})
    assert unknown.status_code == 404
    assert "no deployment 'nope'" in unknown.json()["message"]
    bad = _api(lab, "POST", f"{path}/{deployment_id}/call", {"input": 3})
    assert bad.status_code == 400
    assert '{"input"' in bad.json()["message"]


def _body(response: Any) -> str:
    try:
        return str(response.text())
    except Exception:  # a long-poll cut by the page closing has no body
        return ""


def test_cost_table_is_per_gpu_per_node() -> None:
    assert gpu_cost_per_hour("H100", 8, 2) == pytest.approx(6.50 * 16)
    assert gpu_cost_per_hour(None, 0, 1) == 0.0
    assert gpu_cost_per_hour("UNLISTED", 1, 1) == 0.0


# --------------------------------------------------------------------------- compare

METRICS_SCRIPT = """
import json, sys, time
for step in range(20):
    record = {"step": step, "time": time.time(), "loss": float(sys.argv[1]) / (step + 1)}
    print("[bt-metric] " + json.dumps(record), flush=True)
"""


@pytest.mark.timeout(300)
def test_ticked_jobs_open_side_by_side_in_a_compare_panel(
    lab: tuple[str, str], local_home: Home
) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    root = _LAB_ROOTS[lab[0]]
    _fresh_workspace(lab)
    with Client.local(local_home.root) as client:
        project = client.api.upsert_project("panel-compare")
        ids = []
        for value, name in (("1.0", "small-lr"), ("3.0", "big-lr")):
            wire = submit(
                client.api, project, [f"python train.py {value}"],
                {"train.py": METRICS_SCRIPT}, name=name,
            )  # fmt: skip
            ids.append(wire.id)
        for job_id in ids:
            client.job(job_id).wait(timeout=60)
    write_notebook(root / "compare.ipynb", "1 + 1")
    with notebook_page(lab, "compare.ipynb", height=1100) as page:
        page.locator(".jp-SideBar.jp-mod-left [data-id='bt-jupyter-training']").click()
        sidebar = page.locator("#bt-jupyter-training")
        group = sidebar.locator("[data-testid=bt-project]", has_text="panel-compare")
        expect(group.locator("[data-testid=bt-job]")).to_have_count(2, timeout=60_000)
        group.locator("[data-testid=bt-pick]").nth(0).check()
        compare = sidebar.locator("[data-testid=bt-compare]")
        expect(compare).to_be_disabled()  # one job is not a comparison
        group.locator("[data-testid=bt-pick]").nth(1).check()
        expect(compare).to_have_text("Compare 2")
        compare.click()
        panel = page.locator(".bt-ComparePanel:not(.lm-mod-hidden) [data-testid=bt-compare]")
        runs = panel.locator("[data-testid=bt-compare-runs] tbody tr")
        expect(runs).to_have_count(2, timeout=30_000)
        assert sorted(runs.locator("td:first-child").all_inner_texts()) == ["big-lr", "small-lr"]
        expect(panel.locator("[data-testid=bt-chart][data-metric=loss]")).to_be_visible()
        legend = panel.locator("[data-metric=loss] .u-legend .u-series")
        expect(legend).to_have_count(3)  # x, and one series per run
        facts = panel.locator("[data-testid=bt-compare-facts]")
        expect(facts).to_contain_text("final loss")
        page.screenshot(path=str(ARTIFACTS / "panel-compare.png"), full_page=True)


# --------------------------------------------------------------------------- long lists


def test_a_long_job_list_pages_and_a_long_log_reads_back(
    lab: tuple[str, str], local_home: Home
) -> None:
    """120 jobs more: the sidebar shows the newest 50 and a "Show more" row; a job's
    panel shows the newest 500 lines of its log and reads back 500 at a time to the top."""
    from tests.test_many_jobs import insert_jobs

    expect = pytest.importorskip("playwright.sync_api").expect
    root = _LAB_ROOTS[lab[0]]
    _fresh_workspace(lab)
    with Client.local(local_home.root) as client:
        project = client.api.upsert_project(f"panel-many-{new_id()}")
        insert_jobs(local_home, project.id, 120, start=datetime.now().timestamp() - 86400)
        printer = "print('\\n'.join(f'line {i:04d}' for i in range(1800)))"
        wire = submit(client.api, project, [f'python -c "{printer}"'], name="long-log")
        assert client.job(wire.id).wait(timeout=120).status == spec.TrainingJobStatus.COMPLETED
    write_notebook(root / "many.ipynb", "1 + 1")
    with notebook_page(lab, "many.ipynb", height=1100) as page:
        page.locator(".jp-SideBar.jp-mod-left [data-id='bt-jupyter-training']").click()
        sidebar = page.locator("#bt-jupyter-training")
        rows = sidebar.locator("[data-testid=bt-job]")
        expect(rows).to_have_count(50, timeout=30_000)
        total = _api(lab, "GET", "jobs?limit=1").json()["total"]
        assert total >= 121
        expect(sidebar.locator("[data-testid=bt-shown]")).to_have_text(
            f"Newest 50 of {total:,} jobs"
        )
        more = sidebar.locator("[data-testid=bt-more]")
        more.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "panel-sidebar-more.png"))
        more.click()
        expect(rows).to_have_count(100)

        sidebar.locator(f"[data-job-id='{wire.id}']").click()
        panel = page.locator(".bt-JobPanel:not(.lm-mod-hidden) [data-testid=bt-job-detail]")
        logs = panel.locator("[data-testid=bt-logs]")
        expect(logs).to_contain_text("line 1799", timeout=30_000)
        lines = panel.locator(".bt-LogLine")
        expect(lines).to_have_count(500)
        assert "line 1000" not in logs.inner_text()
        earlier = panel.locator("[data-testid=bt-logs-earlier]")
        earlier.click()
        expect(lines).to_have_count(1000)
        expect(logs).to_contain_text("line 1000")
        assert panel.locator("[data-testid=bt-follow]").is_checked() is False  # reading back
        page.screenshot(path=str(ARTIFACTS / "panel-logs-earlier.png"), full_page=True)
        while earlier.count():
            before = lines.count()
            earlier.click()
            wait_for(
                lambda n=before: lines.count() > n or not earlier.count(),
                15,
                "the earlier lines",
                every=0.1,
            )
        texts = [t.split(" ", 2)[-1] for t in lines.all_text_contents()]
        shown = [t for t in texts if t.startswith("line ")]
        assert shown == [f"line {i:04d}" for i in range(1800)]
