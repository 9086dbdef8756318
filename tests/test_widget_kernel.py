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


def _run(nb: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    return nb


@pytest.mark.timeout(240)
def test_notebook_widget_reaches_completed_with_its_logs(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    nb = _notebook(
        [
            "%load_ext bt_jupyter\n%bt_project kernel-widget",
            "%%bt_train -o job --name widget-run\n"
            "from bt_jupyter.runtime import checkpoint_dir, log_metrics\n"
            "(checkpoint_dir() / 'checkpoint-20').mkdir()\n"
            "(checkpoint_dir() / 'checkpoint-20' / 'w.bin').write_bytes(b'0' * 64)\n"
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
    _run(nb, tmp_path)
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
    assert [(c["name"], c["nodes"]) for c in state["checkpoints"]] == [  # type: ignore[union-attr]
        ("checkpoint-20", [0])
    ]
    assert state["header"]["compute"] == "1 x CPU:1"  # type: ignore[index]
    assert len(json.dumps(state)) < 1_000_000


@pytest.mark.timeout(240)
def test_after_a_kernel_restart_bt_job_renders_the_whole_widget_again(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    first = _run(
        _notebook(
            [
                "%load_ext bt_jupyter",
                "%%bt_train -o job --name before-restart --wait\nprint('hello from the job')",
                "print(job.id)",
            ]
        ),
        tmp_path,
    )
    job_id = first.cells[2].outputs[0]["text"].strip()
    second = _run(  # a new kernel: nothing of the first one is left
        _notebook(
            [
                f"%load_ext bt_jupyter\n%bt_job {job_id}",
                "from bt_jupyter.widgets import shown\n"
                f"widget = shown[{job_id!r}]\n"
                "widget.watcher.join(timeout=30)\n"
                "widget.send_state()",
            ]
        ),
        tmp_path,
    )
    (state,) = _widget_states(second)
    assert state["status"] == "TRAINING_JOB_COMPLETED"
    assert state["header"]["name"] == "before-restart"  # type: ignore[index]
    messages = [line["message"] for line in state["log_tail"]]  # type: ignore[union-attr]
    assert "hello from the job" in messages
    assert len(state["history"]) == 4  # type: ignore[arg-type]


@pytest.mark.timeout(240)
def test_secret_canary_stays_out_of_the_saved_notebook_and_widget_state(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    from bt_jupyter.local.secrets import SecretStore
    from bt_jupyter.local.store import new_id

    canary = f"canary-{new_id(24)}"
    SecretStore(local_home).set("nb_canary", canary)
    nb = _run(
        _notebook(
            [
                "%load_ext bt_jupyter",
                "%%bt_train -o job --secret nb_canary:TOKEN\n"
                "import os\nprint('token', os.environ['TOKEN'], len(os.environ['TOKEN']))",
                "from bt_jupyter.widgets import shown\n"
                "job.wait(timeout=120)\n"
                "widget = shown[job.id]\n"
                "widget.watcher.join(timeout=30)\n"
                "widget.send_state()",
            ]
        ),
        tmp_path,
    )
    (state,) = _widget_states(nb)
    messages = [line["message"] for line in state["log_tail"]]  # type: ignore[union-attr]
    assert f"token *** {len(canary)}" in messages
    saved = tmp_path / "saved.ipynb"
    nbformat.write(nb, saved)
    assert canary not in saved.read_text()


@pytest.mark.timeout(240)
def test_a_headless_run_saves_the_final_widget_and_its_text(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nbconvert / papermill: no widget frontend, yet the saved notebook holds the job's
    statuses and log lines as text, and the widget's final state."""
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    nb = _run(
        _notebook(
            [
                "%load_ext bt_jupyter",
                "%%bt_train -o job --name headless\nfor i in range(3):\n    print(f'line {i}')",
                "job.wait(timeout=120)\nprint('waited')",
            ]
        ),
        tmp_path,
    )
    (display,) = [o for o in nb.cells[1].outputs if o["output_type"] == "display_data"]
    text = display["data"]["text/plain"]
    assert "Job " in text
    assert "(headless)" in text
    assert "[status] RUNNING at" in text
    assert "[node 0] line 2" in text
    assert text.splitlines()[-1] == "[status] COMPLETED"
    (state,) = _widget_states(nb)
    assert state["status"] == "TRAINING_JOB_COMPLETED"
