"""A secret canary, followed to every sink: it may be found only where the user put it
(the secret store) and in files the job itself wrote. Also: credentials of the service
and of the notebook never reach a job's environment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from bt_jupyter import spec
from bt_jupyter.errors import JobFailed
from bt_jupyter.jobs import Client, Job
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.widgets.job import JobWidget
from tests.conftest import magics_on
from tests.helpers import running_service, wait_for

CANARY = "cnry-7d1e9f3b2c" * 2
#: Credentials in the environment of the service and of the notebook.
AMBIENT = {
    "BASETEN_API_KEY": "cnry-baseten-key-5a5a5a",
    "AWS_SECRET_ACCESS_KEY": "cnry-aws-secret-6b6b6b",
    "HF_TOKEN": "cnry-hf-token-7c7c7c",
}
CELL = """\
import os, pathlib
secret = os.environ["MY_SECRET"]
print("the secret is", secret, flush=True)
folder = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "checkpoint-1"
folder.mkdir(parents=True, exist_ok=True)
(folder / "secret.txt").write_text(secret)
raise RuntimeError("boom " + secret)
"""
ENV_DUMP = """\
import os
print(sorted(os.environ.items()), flush=True)
"""


@pytest.fixture(scope="module")
def canary_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = Home(tmp_path_factory.mktemp("canary_home"))
    SecretStore(home).set("canary_s", CANARY)
    with running_service(home, **AMBIENT):
        yield home


@pytest.fixture
def shell(canary_home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """The notebook, with credentials in its own environment too."""
    for key, value in AMBIENT.items():
        monkeypatch.setenv(key, value)
    with magics_on(canary_home, "canary") as ip:
        yield ip


def _hits(text: str) -> list[str]:
    needles = [CANARY, CANARY[:16], CANARY[-16:], *AMBIENT.values()]
    return [n for n in needles if n in text]


def _files_with_canary(root: Path) -> set[Path]:
    found = set()
    for path in root.rglob("*"):
        if path.is_file() and _hits(path.read_bytes().decode("latin-1")):
            found.add(path)
    return found


def test_the_canary_is_only_where_the_user_put_it(
    shell: InteractiveShell, canary_home: Home, tmp_path: Path
) -> None:
    sinks: dict[str, str] = {}
    with capture_output() as out:
        shell.run_cell(f"%%bt_train --secret canary_s:MY_SECRET --name leaky\n{CELL}")
    sinks["cell output"] = out.stdout + out.stderr
    with Client.local(canary_home.root) as client:
        job = client.jobs(project="canary")[0]
        with pytest.raises(JobFailed) as failed:  # the exception raised in the kernel
            job.wait(timeout=180)
        sinks["exception"] = f"{failed.value!s} {failed.value!r}"
        assert job.status == spec.TrainingJobStatus.FAILED
        assert "boom ***" in (job.error_message or "")

        widget = JobWidget(job)
        try:
            wait_for(lambda: widget.status == job.status.value, 30, "the widget's final state")
            wait_for(lambda: widget.error, 30, "the widget's error")
        finally:
            assert widget.watcher is not None
            widget.watcher.close()
            widget.watcher.join(timeout=30)
        sinks["widget state"] = json.dumps(widget.get_state(), default=str)
        widget.close()

        sinks["repr"] = f"{job!r} {job.summary()}"
        sinks["logs"] = "\n".join(line.message for line in job.logs())
        sinks["checkpoints"] = repr(job.checkpoints())
        sinks["history"] = repr(job.history())
        sinks["metrics"] = repr(job.metrics()) + repr(job.user_metrics())
        rest = client.api
        for path in (
            "/v1/training_projects",
            f"/v1/training_projects/{job.project_id}/jobs",
            f"/v1/training_projects/{job.project_id}/jobs/{job.id}",
            f"/v1/training_projects/{job.project_id}/jobs/{job.id}/logs",
            f"/v1/training_projects/{job.project_id}/jobs/{job.id}/checkpoints",
            "/v1/secrets",
        ):
            method = "POST" if path.endswith("/logs") else "GET"
            sinks[f"{method} {path}"] = rest.request(method, path).text
        sinks["search"] = rest.request("POST", "/v1/training_jobs/search", json={}).text
        files = rest.checkpoint_files(job.project_id, job.id)
        assert files, "the job's checkpoint file is listed"

    for name, argument in (("bt_job", job.id), ("bt_jobs", ""), ("bt_logs", job.id)):
        with capture_output() as out:
            shell.run_line_magic(name, argument)
        sinks[f"%{name}"] = out.stdout + out.stderr
    export = tmp_path / "export"
    with capture_output():
        shell.run_line_magic("bt_export", f"{job.id} {export}")
    sinks["export"] = "\n".join(
        p.read_bytes().decode("latin-1") for p in export.rglob("*") if p.is_file()
    )

    leaked = {name: _hits(text) for name, text in sinks.items() if _hits(text)}
    assert leaked == {}, f"the canary leaked into {sorted(leaked)}"
    assert "boom ***" in sinks["exception"]

    # on disk: only the secret store, and the file the job wrote itself
    written_by_job = {p for p in canary_home.root.rglob("secret.txt") if "checkpoint-1" in str(p)}
    assert written_by_job, "the job's own file is there (the search can find the canary)"
    found = _files_with_canary(canary_home.root)
    assert found == {canary_home.secrets_file, *written_by_job}, sorted(map(str, found))


def test_a_job_sees_no_credential_it_did_not_ask_for(canary_home: Home) -> None:
    """Neither the service's environment nor the notebook's reaches a job (a packaged
    cell and a raw start command)."""
    with Client.local(canary_home.root) as client:
        project = spec.TrainingProject(
            name="canary-env",
            job=spec.TrainingJob(
                image=spec.Image(base_image="python:3.11-slim"),
                runtime=spec.Runtime(start_commands=["env", f"python -c '{ENV_DUMP}'"]),
            ),
        )
        job: Job = client.submit(project).wait(timeout=120)
        text = "\n".join(line.message for line in job.logs())
    assert "BT_TRAINING_JOB_ID" in text  # the dump is there
    assert _hits(text) == []
    for key in AMBIENT:
        assert f"{key}=" not in text
        assert f"'{key}'" not in text


def test_a_job_that_asks_for_a_credential_gets_only_that_one(canary_home: Home) -> None:
    SecretStore(canary_home).set("hf_only", "hf-asked-for")
    env = {"HF_TOKEN": spec.SecretReference(name="hf_only")}
    with Client.local(canary_home.root) as client:
        project = spec.TrainingProject(
            name="canary-env",
            job=spec.TrainingJob(
                image=spec.Image(base_image="python:3.11-slim"),
                runtime=spec.Runtime(start_commands=["env"], environment_variables=env),
            ),
        )
        job = client.submit(project).wait(timeout=120)
        text = "\n".join(line.message for line in job.logs())
    assert "HF_TOKEN=***" in text  # its own value, redacted in the log
    assert _hits(text) == []
    assert "BASETEN_API_KEY" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text
