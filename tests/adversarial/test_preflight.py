"""Mistakes refused before anything is sent: a secret or checkpoint that does not exist,
an empty job id, stopping a job that already ended."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import BtJupyterError, MissingSecret, NoCheckpoint, NoSuchJob
from bt_jupyter.jobs import Client
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.store import new_id
from tests.adversarial.checks import assert_one_clear_line, unchanged
from tests.helpers import checkpointing_job

S = spec.TrainingJobStatus


@pytest.fixture(scope="module")
def finished_job(client: ApiClient) -> api.TrainingJobV1:
    """A completed job with two checkpoints, checkpoint-1 and checkpoint-2."""
    project = client.upsert_project(f"preflight-source-{new_id()}")
    return checkpointing_job(client, project, ["checkpoint-1", "checkpoint-2"])


def _project(runtime: spec.Runtime) -> spec.TrainingProject:
    job = spec.TrainingJob(image=spec.Image(base_image="python:3.11-slim"), runtime=runtime)
    return spec.TrainingProject(name=f"preflight-{new_id()}", job=job)


def _loading(*refs: spec.CheckpointReference) -> spec.Runtime:
    config = spec.LoadCheckpointConfig(enabled=True, checkpoints=list(refs))
    return spec.Runtime(start_commands=["true"], load_checkpoint_config=config)


def test_a_missing_secret_is_refused_with_the_secrets_that_exist(local_home: Home) -> None:
    SecretStore(local_home).set("preflight_known", "value-that-stays-home")
    runtime = spec.Runtime(
        start_commands=["true"],
        environment_variables={"TOKEN": spec.SecretReference(name="no_such_secret")},
    )
    with (
        Client.local(local_home.root) as client,
        unchanged(local_home),
        pytest.raises(MissingSecret) as refused,
    ):
        client.submit(_project(runtime))
    message = assert_one_clear_line(
        str(refused.value), "'no_such_secret'", "$TOKEN", "'preflight_known'", "secrets set"
    )
    assert "value-that-stays-home" not in message


def test_a_secret_that_exists_is_not_refused(local_home: Home) -> None:
    SecretStore(local_home).set("preflight_present", "v")
    runtime = spec.Runtime(
        start_commands=['test -n "$TOKEN"'],
        environment_variables={"TOKEN": spec.SecretReference(name="preflight_present")},
    )
    with Client.local(local_home.root) as client:
        assert client.submit(_project(runtime)).wait(timeout=60).status == S.COMPLETED


def test_the_secrets_listing_has_names_and_never_values(
    client: ApiClient, local_home: Home
) -> None:
    SecretStore(local_home).set("preflight_listed", "listing-canary-1234")
    for path in ("/v1/secrets", "/v1/teams/any-team/secrets"):
        response = client.request("GET", path)
        assert {"name": "preflight_listed"} in response.json()["secrets"]
        assert "listing-canary-1234" not in response.text


def test_a_missing_secret_in_a_magic_is_one_line_and_nothing_is_sent(
    ip: InteractiveShell, local_home: Home
) -> None:
    with unchanged(local_home), pytest.raises(UsageError) as refused:
        ip.run_cell_magic("bt_train", "--secret not_stored:MY_SECRET", "print(1)\n")
    assert_one_clear_line(str(refused.value), "'not_stored'", "$MY_SECRET")


@pytest.mark.parametrize(
    ("reference", "mentions"),
    [
        (lambda j: spec.NamedCheckpoint(checkpoint_name="checkpoint-9", job_id=j.id),
         ("'checkpoint-9'", "'checkpoint-1'", "'checkpoint-2'")),
        (lambda j: spec.NamedCheckpoint(checkpoint_name="checkpoint-1", job_id="nojob"),
         ("no job 'nojob'",)),
        (lambda j: spec.LatestCheckpoint(job_id="nojob"), ("no job 'nojob'",)),
        (lambda j: spec.LatestCheckpoint(project_name=f"empty-{new_id()}"),
         ("has no job with checkpoints",)),
        (lambda j: spec.LatestCheckpoint(), ("has no job with checkpoints",)),
    ],
    ids=["named-missing", "named-no-job", "latest-no-job", "latest-empty-project",
         "latest-of-this-new-project"],
)  # fmt: skip
def test_a_checkpoint_that_names_nothing_is_refused_before_sending(
    local_home: Home,
    finished_job: api.TrainingJobV1,
    reference: object,
    mentions: tuple[str, ...],
) -> None:
    assert callable(reference)
    with (
        Client.local(local_home.root) as client,
        unchanged(local_home),
        pytest.raises(NoCheckpoint) as refused,
    ):
        client.submit(_project(_loading(reference(finished_job))))
    assert_one_clear_line(str(refused.value), "no checkpoint to load", *mentions)


def test_a_checkpoint_that_exists_is_loaded(
    local_home: Home, finished_job: api.TrainingJobV1
) -> None:
    named = spec.NamedCheckpoint(checkpoint_name="checkpoint-2", job_id=finished_job.id)
    runtime = _loading(named).model_copy(
        update={"start_commands": ['cat "$BT_LOAD_CHECKPOINT_DIR/rank-0/checkpoint-2/weights.txt"']}
    )
    with Client.local(local_home.root) as client:
        job = client.submit(_project(runtime)).wait(timeout=60)
        assert [line.message for line in job.logs(node=0)] == ["checkpoint-2"]


def test_a_magic_loading_a_missing_checkpoint_is_one_line(
    ip: InteractiveShell, local_home: Home, finished_job: api.TrainingJobV1
) -> None:
    with unchanged(local_home), pytest.raises(UsageError) as refused:
        ip.run_cell_magic("bt_train", f"--load-checkpoint {finished_job.id}:nope", "print(1)\n")
    assert_one_clear_line(str(refused.value), "'nope'", "'checkpoint-1'")


@pytest.mark.parametrize("job_id", ["", "   ", "\t", None], ids=["empty", "spaces", "tab", "none"])
def test_a_job_needs_an_id(local_home: Home, job_id: object) -> None:
    """``Client.job("")`` returned the newest job of any project."""
    with Client.local(local_home.root) as client, pytest.raises(NoSuchJob) as refused:
        client.job(job_id)  # type: ignore[arg-type]
    assert_one_clear_line(str(refused.value), "job id")


def test_an_unknown_job_id_is_one_line(local_home: Home) -> None:
    with Client.local(local_home.root) as client, pytest.raises(BtJupyterError) as refused:
        client.job("../../etc/passwd")
    assert_one_clear_line(str(refused.value), "no job")


def test_stopping_a_job_that_ended_says_so_and_changes_nothing(
    ip: InteractiveShell, local_home: Home, finished_job: api.TrainingJobV1
) -> None:
    with unchanged(local_home), capture_output() as out:
        ip.run_line_magic("bt_stop", finished_job.id)
    assert_one_clear_line(out.stdout, "already ended", "COMPLETED", "nothing to stop")
    assert "stopping" not in out.stdout
