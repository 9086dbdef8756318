"""Issue 14 (trust): bad input gets one clear line and changes nothing; no HTTP 500."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import ApiError
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.store import Store
from tests.helpers import messages, submit, wait_terminal

ABSURD = "1" + "0" * 400 + "Gi"


def test_an_absurd_memory_is_one_line_in_the_notebook_and_nothing_is_sent(
    shell: InteractiveShell,
) -> None:
    shell.run_line_magic("load_ext", "bt_jupyter")
    with pytest.raises(UsageError, match=r"Compute.memory: .* is more memory than any node has"):
        shell.run_cell_magic("bt_train", f"--dry-run --memory {ABSURD}", "print(1)\n")


def test_an_absurd_memory_over_http_is_refused_and_breaks_no_listing(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    body = {
        "training_job": {
            "image": {"base_image": "python:3.11-slim"},
            "compute": {"node_count": 1, "cpu_count": 1, "memory": ABSURD},
            "runtime": {"start_commands": ["true"]},
        }
    }
    with pytest.raises(ApiError) as refused:
        client.request("POST", f"/v1/training_projects/{project.id}/jobs", json=body)
    assert refused.value.status in (400, 422)
    assert client.jobs(project.id) == []  # nothing was created
    # a row stored before this check (an older service took it) still lists, never a 500
    job = client.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(start_commands=["true"]),
        ),
    )
    store = Store(local_home.db)
    with store._tx() as db:
        db.execute(
            "UPDATE jobs SET spec = json_set(spec, '$.compute.memory', ?) WHERE id = ?",
            (ABSURD, job.id),
        )
    assert [j.id for j in client.jobs(project.id)] == [job.id]
    assert client.search_jobs(project_id=project.id)[0].id == job.id


def test_a_secret_never_reaches_an_error_message_or_a_cut_log_line(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    canary = "canary-" + "9f3b2c7d1e" * 3
    SecretStore(local_home).set("trust_canary", canary)
    # the secret straddles the 64 KiB point where a long line is cut into two rows
    script = (
        "import os, sys\n"
        "secret = os.environ['MY_SECRET']\n"
        "print('x' * (64 * 1024 - 10) + secret, flush=True)\n"
        "raise RuntimeError('boom ' + secret)\n"
    )
    job = submit(
        client,
        project,
        ["python leak.py"],
        files={"leak.py": script},
        runtime=spec.Runtime(
            environment_variables={"MY_SECRET": spec.SecretReference(name="trust_canary")}
        ),
    )
    done = wait_terminal(client, job)
    assert done.status == spec.TrainingJobStatus.FAILED
    assert done.error_message == "node 0 exited with code 1: RuntimeError: boom ***"
    everything = "".join(messages(client, job))
    assert canary not in everything
    assert canary[:20] not in everything
    assert canary[-20:] not in everything
    assert "***" in everything
