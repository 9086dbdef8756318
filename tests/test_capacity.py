"""GPU capacity and the queue on the local service, as Baseten gates training jobs: jobs
that do not fit wait PENDING with their reason and queue position, start in priority
order as GPUs free up, a PENDING job's priority can change (no other's), and the queue
context says who held the pool. The magics and the widget show the wait."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from IPython.core.error import UsageError

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import BtJupyterError, NoMetrics
from bt_jupyter.jobs import Client, Job
from bt_jupyter.local import capacity, daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.settings import parse_capacity
from bt_jupyter.local.store import JobRow
from bt_jupyter.widgets.job import JobWidget
from tests.adversarial.checks import assert_one_clear_line, unchanged
from tests.conftest import magics_on
from tests.helpers import running_service, submit, wait_for, wait_status, wait_terminal

S = spec.TrainingJobStatus
#: A job that holds its GPU until its gate file exists.
GATED = ['while [ ! -e "$GATE" ]; do sleep 0.05; done', "echo released"]


@dataclass(frozen=True)
class OneGpu:
    home: Home
    client: ApiClient
    info: daemon.ServiceInfo


@pytest.fixture(scope="module")
def one_gpu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneGpu]:
    """A service whose capacity is one H100 (jobs run on its CPU stand-in)."""
    home = Home(tmp_path_factory.mktemp("bt_capacity"))
    with (
        running_service(home, BT_JUPYTER_GPU_CAPACITY="H100:1") as info,
        ApiClient.local(home.root) as client,
    ):
        yield OneGpu(home, client, info)


def _h100(client: ApiClient, project: api.TrainingProjectV1, gate: Path, **job: object) -> Job:
    wire = submit(
        client,
        project,
        GATED,
        compute=spec.Compute(accelerator="H100:1"),
        runtime=spec.Runtime(environment_variables={"GATE": str(gate)}),
        **job,
    )
    return Job(Client(client, "local", project.name), wire)


def _pending(job: Job, position: int) -> str:
    """Wait until the job waits at ``position``; its notice."""
    wait_for(
        lambda: f"(position {position})" in (job.refresh().notice or ""),
        30,
        f"job {job.id} PENDING at position {position}",
    )
    assert job.status == S.PENDING
    return job.notice or ""


@pytest.mark.timeout(180)
def test_three_jobs_on_one_gpu_wait_in_line_and_start_in_priority_order(
    one_gpu: OneGpu, tmp_path: Path
) -> None:
    home, client = one_gpu.home, one_gpu.client
    project = client.upsert_project("capacity-order")
    gates = {name: tmp_path / name for name in ("a", "b", "c")}
    a = _h100(client, project, gates["a"], name="a")
    wait_status(client, a.wire, S.RUNNING)
    b = _h100(client, project, gates["b"], name="b")
    c = _h100(client, project, gates["c"], name="c")
    try:
        first = _pending(b, 1)
        with pytest.raises(NoMetrics) as none_yet:  # a job that never ran has no metrics
            b.metrics()
        assert_one_clear_line(str(none_yet.value), "PENDING", "never started", "yet")
        assert f"needs 1 H100 GPUs; 1 of 1 in use (by {a.id})" in first
        assert "next in the queue" in first
        assert "1 ahead in the queue" in _pending(c, 2)

        # what a notebook shows: %bt_jobs and the widget say PENDING and why
        with magics_on(home, project.name) as shell:
            out = io.StringIO()
            with redirect_stdout(out):
                shell.run_line_magic("bt_jobs", "")
            text = out.getvalue()
            assert f"{c.id:9} PENDING" in text
            assert "(position 2)" in text
            # c moves ahead of b; a running job's priority cannot change
            shell.run_line_magic("bt_priority", f"{c.id} 10")
            with pytest.raises(UsageError) as refused:
                shell.run_line_magic("bt_priority", f"{a.id} 10")
            assert_one_clear_line(str(refused.value), "RUNNING", "only a PENDING job")
        with unchanged(home), pytest.raises(BtJupyterError) as conflict:
            client.set_priority(project.id, a.id, 3)  # the API says the same
        assert_one_clear_line(str(conflict.value), "RUNNING", "only a PENDING job")
        widget = JobWidget(c)
        try:
            wait_for(lambda: "(position 1)" in widget.notice, 30, "the widget's queue notice")
            assert widget.status == S.PENDING.value
        finally:
            assert widget.watcher is not None
            widget.watcher.close()
            widget.close()
        _pending(c, 1)
        _pending(b, 2)

        # a ends: c (priority 10) starts, b still waits; c ends: b starts
        gates["a"].touch()
        wait_status(client, c.wire, S.RUNNING)
        assert _pending(b, 1)
        assert f"(by {c.id})" in (b.notice or "")
        gates["c"].touch()
        wait_status(client, b.wire, S.RUNNING)
        gates["b"].touch()
        for job in (a, b, c):
            assert wait_terminal(client, job.wire).status == S.COMPLETED

        context = b.queue_context()
        assert context.gpu_type == "H100"
        assert context.requested_gpus == 1
        assert [j.training_job_id for j in context.active_at_submit] == [a.id]
        assert context.org_capacity is not None
        assert context.org_capacity.max_gpus == 1
        assert context.released_at is not None
        assert context.pending_seconds is not None
        # events of the jobs that held the pool when it was submitted (a), and its own;
        # not of c, submitted after it (as Baseten reconstructs it)
        seen = {(e.training_job_id, e.status) for e in context.events}
        assert (a.id, S.COMPLETED.value) in seen
        assert (b.id, S.CREATED.value) in seen
        assert not [e for e in context.events if e.training_job_id == c.id]
        assert context.events == sorted(context.events, key=lambda e: e.created)
    finally:
        for gate in gates.values():
            gate.touch()


@pytest.mark.timeout(120)
def test_a_team_cap_holds_a_teams_jobs_and_the_capacity_view_counts_them(
    one_gpu: OneGpu, tmp_path: Path
) -> None:
    client = one_gpu.client
    cap = client.set_team_capacity("team-cap", "A100", 2)
    assert (cap.team_id, cap.gpu_type, cap.limit, cap.usage_count) == ("team-cap", "A100", 2, 0)
    project = client.upsert_project("capacity-team", team_id="team-cap")
    gate = tmp_path / "gate"
    wires = [
        submit(
            client,
            project,
            GATED,
            compute=spec.Compute(accelerator="A100:1"),
            runtime=spec.Runtime(environment_variables={"GATE": str(gate)}),
        )
        for _ in range(3)
    ]
    jobs = [Job(Client(client, "local", project.name), w) for w in wires]
    try:
        for job in jobs[:2]:
            wait_status(client, job.wire, S.RUNNING)
        notice = _pending(jobs[2], 1)
        assert "team 'team-cap' uses 2 of its 2" in notice
        view = client.capacity()
        (team,) = [t for t in view.team_gpu_capacities if t.team_id == "team-cap"]
        assert (team.limit, team.usage_count) == (2, 2)
        (h100,) = [p for p in view.gpu_capacities if p.gpu_type == "H100"]
        assert h100.limit == 1
        assert not [p for p in view.gpu_capacities if p.gpu_type == "A100"]  # no org cap
        # raising the cap lets the third start
        client.set_team_capacity("team-cap", "A100", 3)
        wait_status(client, jobs[2].wire, S.RUNNING)
    finally:
        gate.touch()
    for job in jobs:
        assert wait_terminal(client, job.wire).status == S.COMPLETED


def test_a_job_that_could_never_fit_is_refused_and_creates_nothing(
    one_gpu: OneGpu,
) -> None:
    home, client = one_gpu.home, one_gpu.client
    project = client.upsert_project("capacity-never")
    with unchanged(home), pytest.raises(BtJupyterError) as refused:
        submit(client, project, ["true"], compute=spec.Compute(accelerator="H100:2"))
    assert_one_clear_line(str(refused.value), "2 H100 GPUs", "at most 1", "--gpu")


def test_cpu_jobs_and_ungated_gpu_types_start_at_once(one_gpu: OneGpu) -> None:
    client = one_gpu.client
    project = client.upsert_project("capacity-ungated")
    for compute in (spec.Compute(), spec.Compute(accelerator="L4:1")):
        job = submit(client, project, ["true"], compute=compute)
        assert job.status != S.PENDING
        assert wait_terminal(client, job).status == S.COMPLETED
        assert next(s for s, _ in client.history(project.id, job.id)) == S.CREATED


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"team_id": "t", "gpu_type": "H1OO", "max_gpus": 1}, ("gpu_type", "'H1OO'")),
        ({"team_id": "../x", "gpu_type": "H100", "max_gpus": 1}, ("team_id",)),
        ({"team_id": "t", "gpu_type": "H100", "max_gpus": -1}, ("max_gpus",)),
        ({"team_id": "t", "gpu_type": "H100", "max_gpus": 2**70}, ("max_gpus",)),
        ({"team_id": "t\x00", "gpu_type": "H100", "max_gpus": 1}, ("team_id",)),
    ],
)
def test_a_bad_capacity_patch_is_one_line_and_changes_nothing(
    one_gpu: OneGpu, body: dict[str, object], mentions: tuple[str, ...]
) -> None:
    headers = {"Authorization": f"Bearer {one_gpu.info.api_key}"}
    with unchanged(one_gpu.home):
        response = httpx.patch(
            f"{one_gpu.info.url}/v1/training/capacity", json=body, headers=headers
        )
    assert response.status_code == 422, response.text
    assert_one_clear_line(response.json()["message"], *mentions)


def test_queue_context_of_a_cpu_job_or_an_unknown_one_says_why_not(
    one_gpu: OneGpu,
) -> None:
    client = one_gpu.client
    project = client.upsert_project("capacity-context")
    job = submit(client, project, ["true"])
    with pytest.raises(BtJupyterError) as refused:
        client.queue_context(job.id)
    assert_one_clear_line(str(refused.value), "asks for no GPUs")
    with pytest.raises(BtJupyterError) as missing:
        client.queue_context("nosuchjob")
    assert "nosuchjob" in str(missing.value)
    wait_terminal(client, job)


# --------------------------------------------------------------------------- the policy


def _row(job_id: str, gpu: str | None, priority: int = 0, at: float = 0.0) -> JobRow:
    compute = {"accelerator": {"accelerator": gpu, "count": 1}} if gpu else {}
    return JobRow(job_id, "p", None, {"compute": compute}, S.PENDING, None, 1, priority, at, at,
                  None, None)  # fmt: skip


def test_the_queue_is_head_of_line_per_pool_and_ordered_by_priority_then_age() -> None:
    pending = [
        _row("old", "H100", at=1),
        _row("urgent", "H100", priority=5, at=3),
        _row("young", "H100", at=2),
        _row("other-pool", "A100", at=4),
        _row("cpu", None, at=5),
    ]
    limits_ = capacity.Limits(org={"H100": 1, "A100": 1}, team={})
    plan = capacity.plan(pending, [], limits_, {})
    assert [j.id for j in plan.release] == ["urgent", "other-pool", "cpu"]
    assert {k: w.position for k, w in plan.waiting.items()} == {"old": 1, "young": 2}


def test_capacity_settings_are_parsed_or_refused_in_one_line() -> None:
    assert parse_capacity(" H100:8, A100:0 ") == {"H100": 8, "A100": 0}
    assert parse_capacity("") == {}
    for bad in ("H100", "h100:1", "H100:-1", "H100:x", "NOPE:1"):
        with pytest.raises(ValueError, match="BT_JUPYTER_GPU_CAPACITY") as refused:
            parse_capacity(bad)
        assert_one_clear_line(str(refused.value), "BT_JUPYTER_GPU_CAPACITY")


@pytest.mark.timeout(120)
def test_bt_train_priority_reaches_the_queue(one_gpu: OneGpu, tmp_path: Path) -> None:
    client = one_gpu.client
    project = client.upsert_project("capacity-magic")
    gate = tmp_path / "gate"
    holder = _h100(client, project, gate)
    try:
        wait_status(client, holder.wire, S.RUNNING)
        with magics_on(one_gpu.home, project.name) as shell:
            with pytest.raises(UsageError) as refused:
                shell.run_cell_magic("bt_train", "--gpu H100:1 --priority 99999999999", "1\n")
            assert_one_clear_line(str(refused.value), "--priority", "2147483647")
            shell.run_cell_magic("bt_train", "--gpu H100:1 --priority 7 -o queued", "print(1)\n")
            queued = shell.user_ns["queued"]
            assert queued.wire.priority == 7
            _pending(queued, 1)
    finally:
        gate.touch()
    assert wait_terminal(client, queued.wire).status == S.COMPLETED
