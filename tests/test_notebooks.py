"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.store import new_id

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, home: Home, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` in a real kernel, in a folder of its own (what it
    writes next to itself stays out of the repository); the notebook with its outputs."""
    monkeypatch.setenv("BT_JUPYTER_HOME", str(home.root))
    monkeypatch.setenv("BT_NOTEBOOK_BACKEND", "local")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    folder = home.root.parent / f"notebook-{name.removesuffix('.ipynb')}-{new_id()}"
    folder.mkdir()
    NotebookClient(
        # no cell deadline: a cell waits for its job, whose first run may build torch's
        # environment on a busy machine (the test's own pytest timeout guards a hang)
        nb,
        timeout=None,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return nb


def run_notebook(name: str, home: Home, monkeypatch: pytest.MonkeyPatch) -> str:
    """Execute ``notebooks/<name>`` and return all its text output."""
    nb = execute(name, home, monkeypatch)
    return "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))


def test_every_notebook_has_a_test() -> None:
    tested = {
        "quickstart.ipynb",
        "multinode.ipynb",
        "cloud.ipynb",
        "finetune_lora.ipynb",
        "session.ipynb",
    }
    # (finetune_lora.ipynb: tests/test_notebook_lora.py, a file of its own so the two
    # test workers share the notebooks' minutes; quickstart.ipynb: tests/test_demo.py,
    # which runs it as `make demo` does)
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == tested


@pytest.mark.timeout(240)
def test_multinode_ddp_then_resume_from_the_latest_checkpoint(
    local_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_notebook("multinode.ipynb", local_home, monkeypatch)
    weights = out.split("weights: ")[1].splitlines()[0]
    assert "checkpoints: ['checkpoint-100']" in out
    assert f"resumed from: ['checkpoint-100', {weights}]" in out


@pytest.mark.timeout(240)
def test_cloud_notebook_runs_against_the_local_service(
    local_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    SecretStore(local_home).set("hf_access_token", "hf_notebook_test_value")
    out = run_notebook("cloud.ipynb", local_home, monkeypatch)
    assert "backend: local" in out
    assert "status: COMPLETED" in out
    assert "checkpoints: ['checkpoint-5']" in out
    assert "losses: [1.0, 0.5, 0.3333333333333333, 0.25, 0.2]" in out
    assert "hf_notebook_test_value" not in out


@pytest.mark.timeout(300)
def test_session_notebook_loads_once_then_iterates(
    local_home: Home, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BASETEN_SSH_DIR", str(tmp_path / "ssh"))
    out = run_notebook("session.ipynb", local_home, monkeypatch)
    assert "model ready on cpu" in out
    assert "logits (4, 32)" in out
    assert "Pushed lr, steps to node 0 of session" in out
    first, last = (float(x) for x in out.split("loss ")[-1].split(" over")[0].split(" -> "))
    assert last < first / 2  # it learned, remotely, and the losses came back
    assert "stops after 20m without a cell" in out
    assert out.rstrip().endswith("stopped")
