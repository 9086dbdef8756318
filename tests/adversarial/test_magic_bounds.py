"""Issue 14: bounds at the boundary, in the notebook and the Python API. Values the service
would refuse are refused before anything is sent, even with ``--dry-run``, with the same
one line (the bounds of :mod:`bt_jupyter.limits`, enforced by the models)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api, limits, spec
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.local.home import Home
from tests.adversarial.checks import assert_one_clear_line, unchanged

TRAIN: list[Any] = [
    pytest.param("--gpu H100:99999999999999999999", "GPU count", id="gpu-20-digits"),
    pytest.param("--gpu H100:9", "GPU count", id="gpu-9"),
    pytest.param("--gpu H100:-1", "count", id="gpu-negative"),
    pytest.param("--nproc-per-node -1", "--nproc-per-node", id="nproc-negative"),
    pytest.param("--nproc-per-node 0", "--nproc-per-node", id="nproc-0"),
    pytest.param("--nproc-per-node 1000000", "--nproc-per-node", id="nproc-10**6"),
    pytest.param("--nproc-per-node 1e3", "--nproc-per-node", id="nproc-float"),
    pytest.param("--nodes 100000000000000000000", "node_count", id="nodes-10**20"),
    pytest.param("--nodes 65", "node_count", id="nodes-65"),
    pytest.param("--nodes -3", "node_count", id="nodes-negative"),
    pytest.param("--cpu 0", "cpu_count", id="cpu-0"),
    pytest.param("--cpu -1", "cpu_count", id="cpu-negative"),
    pytest.param("--cpu 100000", "cpu_count", id="cpu-10**5"),
    pytest.param("--memory 99999999Ti", "memory", id="memory-huge"),
    pytest.param("--checkpoint-volume-gib 0", "--checkpoint-volume-gib", id="volume-0"),
    pytest.param("--checkpoint-volume-gib 10000000", "--checkpoint-volume-gib", id="volume-10**7"),
    pytest.param("--name " + "n" * 300, "job name", id="name-300-chars"),
    pytest.param("--name 'a\x00b'", "control character", id="name-nul"),
    pytest.param("--name 'a\x1bb'", "control character", id="name-escape"),
    pytest.param("--project " + "p" * 300, "project name", id="project-300-chars"),
    pytest.param("--project 'p\x00'", "control character", id="project-nul"),
    pytest.param("--env 'A=x\x00y'", "NUL", id="env-value-nul"),
    pytest.param("--env A=" + "x" * (65 * 1024), "value of A", id="env-value-65kib"),
    pytest.param("--env " + "V" * 300 + "=1", "environment variable name", id="env-name-300"),
    pytest.param("--secret ../x", "secret name", id="secret-path"),
    pytest.param("--team ../../../../tmp/x", "team name", id="team-escape"),
    pytest.param("--team 'a/b'", "team name", id="team-slash"),
    pytest.param("--load-checkpoint 'job1:../../etc'", "checkpoint name", id="checkpoint-escape"),
    pytest.param("--load-checkpoint 'job1:/etc'", "checkpoint name", id="checkpoint-absolute"),
]


@pytest.mark.parametrize(("line", "mention"), TRAIN)
def test_bt_train_refuses_out_of_bounds_even_in_a_dry_run(
    ip: InteractiveShell, local_home: Home, line: str, mention: str
) -> None:
    with unchanged(local_home), pytest.raises(UsageError) as refused:
        ip.run_cell_magic("bt_train", f"--dry-run {line}", "x = 1\n")
    assert_one_clear_line(str(refused.value), mention)


@pytest.mark.parametrize(
    ("magic", "line", "mention"),
    [
        pytest.param("bt_project", "p" * 300, "project name", id="project-300-chars"),
        pytest.param("bt_project", "a\x07b", "control character", id="project-bell"),
        pytest.param("bt_logs", "somejob --tail -1", "--tail", id="logs-tail-negative"),
        pytest.param("bt_logs", "somejob --node 99999", "--node", id="logs-node-99999"),
    ],
)
def test_line_magics_refuse_out_of_bounds(
    ip: InteractiveShell, local_home: Home, magic: str, line: str, mention: str
) -> None:
    before = ip.run_line_magic("config", "BtMagics.default_project")
    with unchanged(local_home), pytest.raises(UsageError) as refused:
        ip.run_line_magic(magic, line)
    assert_one_clear_line(str(refused.value), mention)
    assert ip.run_line_magic("config", "BtMagics.default_project") == before


def _job(**fields: Any) -> spec.TrainingJob:
    return spec.TrainingJob(image=spec.Image(base_image="python:3.11-slim"), **fields)


PYTHON: list[Any] = [
    pytest.param(lambda: spec.Compute(node_count=2**63), "node_count", id="nodes-2**63"),
    pytest.param(lambda: spec.Compute(accelerator="H100:10000"), "GPU count", id="gpu-10000"),
    pytest.param(lambda: spec.Compute(cpu_count=0), "cpu_count", id="cpu-0"),
    pytest.param(lambda: _job(priority=2**70), "priority", id="priority-2**70"),
    pytest.param(lambda: _job(name="j" * 1_000_000), "name", id="job-name-1mb"),
    pytest.param(
        lambda: spec.Runtime(start_commands=["echo\x00"]), "NUL", id="runtime-command-nul"
    ),
    pytest.param(
        lambda: spec.Runtime(environment_variables={f"V{i}": "1" for i in range(600)}),
        "environment variables",
        id="runtime-600-env",
    ),
    pytest.param(
        lambda: spec.TrainingProject(name="p" * 20_000_000, job=_job()), "name", id="project-20mb"
    ),
    pytest.param(
        lambda: spec.TrainingProject(name="p", team_name="..", job=_job()),
        "team name",
        id="project-team-dotdot",
    ),
    pytest.param(
        lambda: spec.SecretReference(name="a/b"), "secret name", id="secret-reference-slash"
    ),
    pytest.param(
        lambda: spec.NamedCheckpoint(checkpoint_name="../x", job_id="j"),
        "checkpoint name",
        id="named-checkpoint-escape",
    ),
    pytest.param(
        lambda: api.UpdateTrainingJobRequestV1(priority=2**70), "priority", id="api-priority"
    ),
    pytest.param(
        lambda: api.SearchTrainingJobsRequestV1(statuses=["BOGUS"]),
        "unknown job status",
        id="api-search-bogus",
    ),
    pytest.param(
        lambda: api.GetTrainingJobLogsRequestV1(start_epoch_millis=2**80),
        "start_epoch_millis",
        id="api-logs-2**80",
    ),
    pytest.param(
        lambda: api.UpsertTrainingProjectV1(name="x", team_name="../../tmp/x"),
        "team name",
        id="api-upsert-team-escape",
    ),
]


@pytest.mark.parametrize(("build", "mention"), PYTHON)
def test_the_python_api_refuses_out_of_bounds_in_one_line(
    build: Callable[[], object], mention: str
) -> None:
    with pytest.raises(InvalidConfigError) as refused:
        build()
    assert_one_clear_line(str(refused.value), mention)


def test_a_long_input_is_quoted_short() -> None:
    """An error quotes at most ~60 characters of what was wrong, never all of it."""
    assert len(limits.shown("x" * 5_000_000)) < 100
    assert limits.shown(10**5000) == "a 5001-digit number"
    with pytest.raises(InvalidConfigError) as refused:
        spec.Image(base_image="y" * 5_000_000)
    assert len(str(refused.value)) < 200
