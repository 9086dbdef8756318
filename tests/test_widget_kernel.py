"""The widget in a real kernel: nbclient runs a notebook, the saved widget state is checked."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from bt_jupyter.local.home import Home

MODEL = "anywidget"


def _notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def _widget_states(nb: nbformat.NotebookNode) -> list[dict[str, object]]:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [m["state"] for m in state.values() if m["model_name"] == "AnyModel"]


@pytest.mark.timeout(240)
def test_notebook_widget_reaches_completed_with_its_logs(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    nb = _notebook(
        [
            "%load_ext bt_jupyter\n%bt_project kernel-widget",
            "%%bt_train -o job --name widget-run\n"
            "from bt_jupyter.runtime import log_metrics\n"
            "for step in range(20):\n"
            "    print(f'step {step}')\n"
            "    log_metrics(step=step, loss=1 / (step + 1))",
            "from bt_jupyter.widgets import shown\n"
            "job.wait(timeout=120)\n"
            "widget = shown[job.id]\n"
            "widget.watcher.join(timeout=30)\n"
            # nbclient keeps only comm messages sent while a cell runs; the watcher may
            # have published its last update between cells
            "widget.send_state()\n"
            "print(widget.status, widget.log_count, len(widget.metrics))",
        ]
    )
    NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    printed = nb.cells[2].outputs[0]["text"].split()
    assert printed[0] == "TRAINING_JOB_COMPLETED"
    assert int(printed[1]) >= 41
    assert printed[2] == "20"
    (state,) = _widget_states(nb)
    assert state["status"] == "TRAINING_JOB_COMPLETED"
    messages = [line["message"] for line in state["log_tail"]]  # type: ignore[union-attr]
    assert [m for m in messages if m.startswith("step ")] == [f"step {i}" for i in range(20)]
    assert [s["status"] for s in state["history"]] == [  # type: ignore[union-attr]
        "TRAINING_JOB_CREATED",
        "TRAINING_JOB_DEPLOYING",
        "TRAINING_JOB_RUNNING",
        "TRAINING_JOB_COMPLETED",
    ]
    assert state["header"]["name"] == "widget-run"  # type: ignore[index]
    assert state["header"]["compute"] == "1 x CPU:1"  # type: ignore[index]
    assert len(json.dumps(state)) < 1_000_000
