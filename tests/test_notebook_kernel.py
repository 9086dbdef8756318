"""The kernel side of the notebook experience, in real IPython kernels (jupyter_client,
nbclient) where the timing of IPython's hooks matters, else in an InteractiveShell:

- ``--out`` without ``--wait`` binds when the job completes: at once when the kernel is
  idle, at the next cell when one is running, never when the job failed (and says so);
- a failing job's traceback names the notebook's cells and lines, with their source;
- ``%bt_jobs`` hints at the other projects' jobs after a kernel restart.
"""

from __future__ import annotations

import os
import queue
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.utils.capture import capture_output
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from nbclient import NotebookClient

from bt_jupyter import api
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import JobFailed
from bt_jupyter.jobs import TracebackHold
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.conftest import magics_on
from tests.helpers import wait_for

# --------------------------------------------------------------------------- a real kernel


class Kernel:
    """A python3 kernel on the test service: run cells, read what they print."""

    def __init__(self, client: BlockingKernelClient) -> None:
        self.kc = client
        self.stray: list[dict[str, Any]] = []  # iopub messages read while waiting for others

    def run(self, code: str, timeout: float = 60) -> tuple[str, str, list[dict[str, Any]]]:
        """Execute a cell: (its msg_id, its printed text, its error outputs)."""
        texts: list[str] = []
        errors: list[dict[str, Any]] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                texts.append(content["text"])
            elif kind == "error":
                errors.append(content)

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["parent_header"]["msg_id"], "".join(texts), errors

    def value(self, expression: str) -> str:
        """An expression's repr, by a silent execution: IPython fires pre_execute and
        post_execute for it, not pre_run_cell (nothing pending is bound by it)."""
        msg_id = self.kc.execute("", silent=True, user_expressions={"v": expression})
        reply = self.kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id
        found = reply["content"]["user_expressions"]["v"]
        assert found["status"] == "ok", found
        return str(found["data"]["text/plain"])

    def printed_in(self, msg_id: str, text: str, timeout: float) -> str:
        """Wait (while no cell runs) for ``text`` printed in the output of cell ``msg_id``."""
        seen: list[str] = []

        def check() -> str | None:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                return None
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                seen.append(msg["content"]["text"])
                joined = "".join(seen)
                return joined if text in joined else None
            self.stray.append(msg)
            return None

        found: str = wait_for(check, timeout, f"{text!r} in the output of the cell")
        return found


@pytest.fixture
def kernel(local_home: Home) -> Iterator[Kernel]:
    env = {**os.environ, "BT_JUPYTER_HOME": str(local_home.root)}
    manager: KernelManager
    manager, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        k = Kernel(kc)
        _, _, errors = k.run(f"%load_ext bt_jupyter\n%bt_project kernel-{new_id()}")
        assert not errors, errors
        yield k
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)


def _job_status(client: ApiClient, kernel: Kernel, name: str) -> str:
    project_id, job_id = kernel.value(f"({name}.project_id, {name}.id)").strip("()").split(", ")
    job = client.job(project_id.strip("'"), job_id.strip("'")).training_job
    return job.status.short if job.status.is_terminal else ""


def _submitted(kernel: Kernel, cell: str) -> str:
    """Run a ``%%bt_train`` cell that returns at once; its message id."""
    submit_id, _, errors = kernel.run(cell)
    assert not errors, errors
    return submit_id


def _ended(client: ApiClient, kernel: Kernel, name: str) -> str:
    """The final status of the job the notebook holds as ``name``, once it ended."""
    return wait_for(lambda: _job_status(client, kernel, name), 60, "the job to end", every=0.2)


@pytest.mark.timeout(120)
def test_out_without_wait_binds_when_the_job_completes_while_the_kernel_is_idle(
    kernel: Kernel, client: ApiClient
) -> None:
    submit_id = _submitted(
        kernel, "%%bt_train --name outjob --out final -o j\nfinal = 6 * 7\nprint('trained')"
    )
    assert kernel.value("j.outputs_state.stage") == "'waiting'"
    assert _ended(client, kernel, "j") == "COMPLETED"
    # no cell runs: the binding thread binds at once and says so in the submitting cell
    said = kernel.printed_in(submit_id, "→ bound", timeout=30)
    assert said.strip().startswith("outputs: final → bound (job ")
    assert kernel.value("final") == "42"  # a silent execution: no pre_run_cell bound it
    assert kernel.value("j.outputs_state.text") == "'outputs: final → bound'"
    _, out, errors = kernel.run("print(final)")
    assert not errors
    assert out == "42\n"  # bound once: no second line in the next cell


@pytest.mark.timeout(120)
def test_out_binds_at_the_next_cell_when_the_job_completes_while_a_cell_runs(
    kernel: Kernel,
) -> None:
    _, _, errors = kernel.run("%%bt_train --out later -o j\nlater = [1, 2, 3]")
    assert not errors, errors
    # this cell runs past the job's end and the fetch of its outputs: nothing is bound
    # under it; the binder says "pending"
    _, out, errors = kernel.run(
        "import time\n"
        "deadline = time.monotonic() + 60\n"
        "while j.outputs_state.stage == 'waiting' and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print(j.status.short if j.refresh() else '', j.outputs_state.stage, 'later' in dir())",
        timeout=90,
    )
    assert not errors, errors
    assert out.split() == ["COMPLETED", "pending", "False"]
    _, out, errors = kernel.run("print(later)")
    assert not errors, errors
    first, second = out.splitlines()
    assert first.startswith("outputs: later → bound (job ")
    assert second == "[1, 2, 3]"


@pytest.mark.timeout(120)
def test_out_of_a_failed_job_is_not_bound_and_says_why(kernel: Kernel, client: ApiClient) -> None:
    submit_id = _submitted(
        kernel, "%%bt_train --out never -o bad\nnever = 1\nraise RuntimeError('boom')"
    )
    assert _ended(client, kernel, "bad") == "FAILED"
    said = kernel.printed_in(submit_id, "not bound", timeout=30)
    assert said.strip().startswith("outputs: never → not bound: job FAILED: ")
    assert "RuntimeError: boom" in said
    assert kernel.value("'never' in globals()") == "False"
    assert kernel.value("bad.outputs_state.stage") == "'not_bound'"


@pytest.mark.timeout(120)
def test_a_value_that_cannot_travel_spares_the_job_and_the_other_values(
    kernel: Kernel, client: ApiClient
) -> None:
    """A finished training is never failed by its ``--out``: the value that cannot be
    pickled is named with its type, why, and what to send instead; the others bind."""
    submit_id = _submitted(
        kernel,
        "%%bt_train --out history,model -o j\n"
        "import threading\n"
        "class Model:\n"
        "    def __init__(self):\n"
        "        self.lock = threading.Lock()  # as a Trainer's weakrefs: no pickle\n"
        "    def state_dict(self):\n"
        "        return {'w': 1}\n"
        "model = Model()\n"
        "history = [{'loss': 0.5}]",
    )
    assert _ended(client, kernel, "j") == "COMPLETED"
    said = kernel.printed_in(submit_id, "→ bound", timeout=30)
    assert said.strip().startswith("outputs: history → bound; --out model (")
    assert "Model) was not sent back: TypeError: cannot pickle '_thread.lock' object" in said
    assert "send model.state_dict() instead" in said
    assert kernel.value("history") == "[{'loss': 0.5}]"
    assert kernel.value("'model' in globals()") == "False"
    assert kernel.value("type(j.outputs()['model']).__name__") == "'NotSent'"


# --------------------------------------------------------------------------- tracebacks


@pytest.mark.timeout(180)
def test_a_failing_jobs_traceback_names_the_notebooks_cells_lines_and_source(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BT_JUPYTER_HOME", str(local_home.root))
    cells = [
        f"%load_ext bt_jupyter\n%bt_project kernel-tb-{new_id()}",  # In[1]
        "def helper(x):\n    y = x * 2\n    return y / (x - x)\n",  # In[2], fails on line 3
        "%%bt_train --wait\nprint('before the failure')\nz = 1\nhelper(z)",  # In[3], line 4
        "%%bt_train --wait\nprint('cell before')\n\nitems = {}\nitems['missing']",  # In[4]
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    helper_cell = _outputs(nb.cells[2])
    assert helper_cell["ename"] == ["JobTraceback"]  # a JobFailed, not a UsageError
    text = helper_cell["text"]
    assert "[node 0] before the failure" in text
    assert "Traceback" not in text  # shown once: in the error, after all the job printed
    assert helper_cell["kinds"][-1] == "error"
    assert text.count("[status] FAILED") == 1
    tb = helper_cell["traceback"]
    frames = [line.strip() for line in tb]
    assert 'File "Cell In[3]", line 4, in <module>' in frames
    assert frames[frames.index('File "Cell In[3]", line 4, in <module>') + 1] == "helper(z)"
    assert 'File "Cell In[2]", line 3, in helper' in frames
    assert frames[frames.index('File "Cell In[2]", line 3, in helper') + 1] == "return y / (x - x)"
    assert "<dynamic-code>" not in "\n".join(tb)
    assert "cell.py" not in "\n".join(tb)
    assert tb[-1].endswith("ZeroDivisionError: division by zero")

    own_cell = _outputs(nb.cells[3])
    frames = [line.strip() for line in own_cell["traceback"]]
    assert 'File "Cell In[4]", line 5, in <module>' in frames
    assert frames[frames.index('File "Cell In[4]", line 5, in <module>') + 1] == "items['missing']"
    assert own_cell["text"].index("[node 0] cell before") < own_cell["text"].index("[status] FAIL")
    assert own_cell["kinds"][-1] == "error"


def _outputs(cell: nbformat.NotebookNode) -> dict[str, Any]:
    """A cell's printed text, error names, and its error's traceback (ANSI codes removed)."""
    plain = re.compile(r"\x1b\[[0-9;]*m")
    errors = [o for o in cell.outputs if o["output_type"] == "error"]
    return {
        "text": "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream"),
        "ename": [e["ename"] for e in errors],
        "kinds": [o["output_type"] for o in cell.outputs],
        "traceback": [plain.sub("", line) for e in errors for line in e["traceback"]],
    }


def test_a_failure_raises_job_failed_in_a_shell_with_wait(local_home: Home) -> None:
    with magics_on(local_home, f"tb-{new_id()}") as ip:
        with capture_output():
            result = ip.run_cell("%%bt_train --wait\nraise ValueError('bad value')")
        error = result.error_in_exec
        assert isinstance(error, JobFailed)
        assert "ValueError: bad value" in str(error)
        assert error._render_traceback_()[0] == "Traceback (most recent call last):"


# --------------------------------------------------------------------------- in a shell


def test_out_keeps_a_variable_the_notebook_reassigned_after_the_submit(
    local_home: Home,
) -> None:
    with magics_on(local_home, f"kept-{new_id()}") as ip:
        ip.run_cell("%%bt_train --out mine,theirs -o j\nmine = 'job'\ntheirs = 'job'")
        job = ip.user_ns["j"]
        ip.run_cell("mine = 'notebook'")
        wait_for(lambda: job.outputs_state.stage == "bound", 60, "the outputs to be bound")
        ip.run_cell("pass")  # bound at once, or at this cell's start
        assert ip.user_ns["mine"] == "notebook"
        assert ip.user_ns["theirs"] == "job"
        assert job.outputs_state.kept == ("mine",)
        text = job.outputs_state.text
        assert text.startswith("outputs: theirs → bound; kept mine: re-assigned after the submit")


def test_bt_jobs_hints_at_jobs_in_other_projects(local_home: Home) -> None:
    with magics_on(local_home, f"elsewhere-{new_id()}") as ip:
        ip.run_cell("%%bt_train --name elsewhere\nx = 1")
        ip.run_line_magic("bt_project", f"empty-{new_id()}")  # as after a kernel restart
        with capture_output() as out:
            ip.run_line_magic("bt_jobs", "")
    line = out.stdout.strip()
    assert line.startswith("no jobs in project 'empty-")
    assert "other project" in line
    assert "jobs (" in line
    assert line.endswith(": %bt_jobs --all, or %bt_project NAME")


def _log(message: str, seconds: float, node: str | None = "0") -> api.LogV1:
    return api.LogV1(timestamp=str(int(seconds * 1e9)), message=message, replica=node)


def test_a_traceback_the_node_carries_on_after_is_shown_where_it_was() -> None:
    """A caught-and-printed traceback is not the failure's: once the node prints on a
    second later, it is shown in place; a line printed with the failure is shown at once."""
    hold = TracebackHold()
    block = [
        _log("Traceback (most recent call last):", 1.0),
        _log('  File "Cell In[3]", line 2, in <module>', 1.0),
        _log("KeyError: 'x'", 1.0),
    ]
    assert [hold.feed(line) for line in block] == [[], [], []]
    racing = _log("printed just before", 1.1)
    assert hold.feed(racing) == [racing]
    runner = _log("Job still running", 5.0, node=None)
    assert hold.feed(runner) == [runner]  # another source: no sign the node carried on
    later = _log("step 2", 2.5)
    assert hold.feed(later) == [*block, later]
    assert hold.finish(failed=True) == ([], [])

    hold = TracebackHold()
    for line in block:
        hold.feed(line)
    assert hold.finish(failed=True) == ([], [line.message for line in block])


def test_a_line_printed_before_the_failure_is_not_taken_into_its_traceback() -> None:
    """stdout and stderr reach the log by two pipes: under load a line the cell printed
    first can be stored after the traceback's first line. It is shown, and the
    traceback stays whole."""
    hold = TracebackHold()
    start = _log("Traceback (most recent call last):", 1.0)
    assert hold.feed(start) == []
    racing = _log("cell before", 1.0)
    assert hold.feed(racing) == [racing]
    rest = [
        _log('  File "Cell In[4]", line 5, in <module>', 1.0),
        _log("    items['missing']", 1.0),
        _log("KeyError: 'missing'", 1.0),
    ]
    assert [hold.feed(line) for line in rest] == [[], [], []]
    assert hold.finish(failed=True) == ([], [line.message for line in [start, *rest]])
