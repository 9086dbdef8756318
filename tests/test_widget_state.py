"""The job widget's kernel side against a real local service and real job processes:
what it syncs (checkpoint sizes while written, nodes of metric records, the kernel's
heartbeat), what it answers (ping), the log file it offers and the static HTML a
frontend without the widget's model shows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.jobs import Client, Job, OutputsState
from bt_jupyter.widgets.job import BEAT_SECONDS, JobWidget
from tests.helpers import in_job_runtime, submit, wait_for, wait_terminal

WAIT_FOR = """
import pathlib, sys, time
def wait(name):
    flag = pathlib.Path(sys.argv[1]) / name
    while not flag.exists():
        time.sleep(0.02)
"""


@pytest.fixture
def widgets() -> Iterator[list[JobWidget]]:
    """Widgets made by a test; their watchers are closed at the end."""
    made: list[JobWidget] = []
    yield made
    for widget in made:
        if widget.watcher is not None:
            widget.watcher.close()
            widget.watcher.join(timeout=10)
        widget.close()


def _widget(
    client: ApiClient, wire: api.TrainingJobV1, widgets: list[JobWidget]
) -> tuple[JobWidget, Job]:
    job = Job(Client(client, "local", "test"), wire)
    widget = JobWidget(job)
    widgets.append(widget)
    return widget, job


def _finished(widget: JobWidget) -> None:
    assert widget.watcher is not None
    widget.watcher.join(timeout=60)
    assert not any(t.is_alive() for t in widget.watcher._threads), "the watcher did not end"


@pytest.mark.timeout(120)
def test_a_checkpoint_being_written_shows_writing_then_its_size_before_the_job_ends(
    client: ApiClient,
    project: api.TrainingProjectV1,
    tmp_path: Path,
    widgets: list[JobWidget],
) -> None:
    script = WAIT_FOR + (
        "import os\n"
        "ckpt = pathlib.Path(os.environ['BT_CHECKPOINT_DIR']) / 'checkpoint-1'\n"
        "ckpt.mkdir(parents=True)\n"
        "wait('write')\n"
        "(ckpt / 'w.bin').write_bytes(b'0' * 2_000_000)\n"
        "wait('end')\n"
    )
    wire = submit(
        client,
        project,
        [f"python -u job.py {tmp_path}"],
        {"job.py": script},
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    widget, _ = _widget(client, wire, widgets)

    def row() -> dict[str, Any] | None:
        return next((c for c in widget.checkpoints if c["name"] == "checkpoint-1"), None)

    empty = wait_for(row, 60, "the empty checkpoint to be listed")
    assert empty["size"] == 0
    assert empty["writing"] is True
    (tmp_path / "write").touch()
    grown = wait_for(
        lambda: (r := row()) is not None and r["size"] == 2_000_000 and r,
        30,
        "the checkpoint's size while the job runs",
    )
    assert not widget.status.endswith("COMPLETED"), "the size came only at the end"
    assert grown["nodes"] == [0]
    (tmp_path / "end").touch()
    _finished(widget)
    (final,) = widget.checkpoints
    assert final["size"] == 2_000_000
    assert final["writing"] is False


@pytest.mark.timeout(120)
def test_metric_records_carry_their_node_and_the_html_summary_reads_the_job(
    client: ApiClient, project: api.TrainingProjectV1, widgets: list[JobWidget]
) -> None:
    script = (
        "from bt_jupyter.runtime import log_metrics\n"
        "print('first line')\n"
        "print('')\n"
        "print('   ')\n"
        "for step in range(5):\n"
        "    log_metrics(step=step, loss=1 / (step + 1))\n"
        "print('<b>last</b> line')\n"
    )
    wire = submit(client, project, ["python -u job.py"], {"job.py": script, **in_job_runtime()})
    widget, _ = _widget(client, wire, widgets)
    _finished(widget)
    assert widget.status == "TRAINING_JOB_COMPLETED"
    assert [r["node"] for r in widget.metrics] == [0] * 5
    assert [r["step"] for r in widget.metrics] == list(range(5))

    bundle = widget._repr_mimebundle_()
    assert bundle is not None
    data = bundle[0]
    assert "application/vnd.jupyter.widget-view+json" in data
    page = data["text/html"]
    assert "COMPLETED" in page
    assert "RUNNING (" in page  # the lifecycle with times
    assert "loss = 0.2" in page  # the final metric value
    assert "&lt;b&gt;last&lt;/b&gt; line" in page  # escaped, never markup
    assert "[bt-metric]" not in page
    assert f"%bt_job {widget.job.id}" in page
    text = data["text/plain"]
    assert "[node 0] first line" in text
    assert "[node 0] \n" not in text + "\n"
    assert "[node 0]    " not in text
    assert "[bt-metric]" not in text


@pytest.mark.timeout(120)
def test_the_log_file_has_iso_times_and_the_node_of_each_line(
    client: ApiClient, project: api.TrainingProjectV1, widgets: list[JobWidget]
) -> None:
    wire = submit(client, project, ["python -u -c \"print('hello file')\""])
    wait_terminal(client, wire)
    widget, _ = _widget(client, wire, widgets)
    rows = widget.log_file().splitlines()
    hello = next(r for r in rows if r.endswith("hello file"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 node 0 hello file", hello)
    assert any(" runner " in r for r in rows), "the runner's own lines say so"
    assert not re.search(r"^\d{15,} ", "\n".join(rows), flags=re.MULTILINE)


@pytest.mark.timeout(120)
def test_the_outputs_line_follows_the_binding_of_out_variables(
    client: ApiClient, project: api.TrainingProjectV1, widgets: list[JobWidget]
) -> None:
    wire = submit(client, project, ["python -u -c \"print('outputs')\""])
    widget, job = _widget(client, wire, widgets)
    assert widget.outputs == ""
    job.set_outputs_state(OutputsState(("final",), "waiting"))
    assert widget.outputs == "outputs: final → bound when the job completes"
    job.set_outputs_state(OutputsState(("final",), "bound"))
    assert widget.outputs == "outputs: final → bound"
    _finished(widget)
    assert "outputs: final → bound" in repr(widget)
    assert "outputs: final → bound" in widget.summary_html()


@pytest.mark.timeout(120)
def test_a_live_widget_beats_and_answers_a_ping(
    client: ApiClient,
    project: api.TrainingProjectV1,
    tmp_path: Path,
    widgets: list[JobWidget],
) -> None:
    wire = submit(
        client, project, [f"python -u job.py {tmp_path}"], {"job.py": WAIT_FOR + "wait('end')\n"}
    )
    widget, _ = _widget(client, wire, widgets)
    first = wait_for(lambda: widget.beat or None, 30, "the first beat")
    wait_for(lambda: widget.beat > first, BEAT_SECONDS * 4, "a second beat while it runs")
    sent: list[dict[str, Any]] = []
    widget.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    widget._on_message(widget, {"type": "ping"}, [])
    assert sent == [{"type": "pong"}]
    (tmp_path / "end").touch()
    _finished(widget)


@pytest.mark.timeout(120)
def test_system_metrics_are_charted_per_node_without_made_up_gpus(
    client: ApiClient, project: api.TrainingProjectV1, widgets: list[JobWidget], tmp_path: Path
) -> None:
    """Each node's CPU, memory and disk as chart records (the runner samples them with
    psutil); this machine has no GPU, so no GPU series at all (absent, not zero)."""
    gate = tmp_path / "gate"
    wire = submit(
        client,
        project,
        ['while [ ! -e "$GATE" ]; do sleep 0.05; done'],
        compute=spec.Compute(node_count=2),
        runtime=spec.Runtime(environment_variables={"GATE": str(gate)}),
    )
    widget, _ = _widget(client, wire, widgets)
    try:
        wait_for(
            lambda: {r.get("node") for r in widget.system_metrics if "CPU %" in r} == {"0", "1"},
            60,
            "CPU samples of both nodes in the widget",
        )
    finally:
        gate.touch()
    _finished(widget)
    records = widget.system_metrics
    names = {k for r in records for k in r} - {"time", "node"}
    assert {"CPU %", "memory GB"} <= names
    assert not [n for n in names if n.startswith("GPU")]
    assert all(r["CPU %"] >= 0 for r in records if "CPU %" in r)
    assert all(0 < r["memory GB"] < 64 for r in records if "memory GB" in r)
    times = [r["time"] for r in records]
    assert times == sorted(times)
