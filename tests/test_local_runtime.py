"""What a job sees at run time: secrets, caches, loaded checkpoints, its Python environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from tests.helpers import INSTALL, checkpointing_job, messages, requirements, submit, wait_terminal

S = spec.TrainingJobStatus
SECRET_VALUE = "hf_s3cr3t_value_0123456789"


def _set_secret(home: Home, name: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bt_jupyter.cli", "secrets", "set", name],
        input=value,
        capture_output=True,
        text=True,
        env={"BT_JUPYTER_HOME": str(home.root), "PATH": "/usr/bin:/bin"},
        check=True,
    )


def test_secret_reference_resolves_and_is_redacted_everywhere(
    client: ApiClient, project: api.TrainingProjectV1, local_home: Home
) -> None:
    done = _set_secret(local_home, "hf_token", SECRET_VALUE)
    assert SECRET_VALUE not in done.stdout + done.stderr
    assert oct(local_home.secrets_file.stat().st_mode & 0o777) == "0o600"
    job = submit(
        client,
        project,
        [
            'echo "token=$HF_TOKEN"',
            "python -c \"import os; print(len(os.environ['HF_TOKEN']))\"",
            'echo "$HF_TOKEN" >&2',
        ],
        runtime=spec.Runtime(
            environment_variables={"HF_TOKEN": spec.SecretReference(name="hf_token")}
        ),
    )
    assert wait_terminal(client, job).status == S.COMPLETED
    out = messages(client, job)
    assert "token=***" in out
    assert str(len(SECRET_VALUE)) in out  # the job saw the real value
    assert not any(SECRET_VALUE in m for m in out)
    assert SECRET_VALUE.encode() not in local_home.db.read_bytes()
    wal = local_home.db.with_name(local_home.db.name + "-wal")
    assert not wal.exists() or SECRET_VALUE.encode() not in wal.read_bytes()


def test_missing_secret_is_deploy_failed_naming_it(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        ["echo never"],
        runtime=spec.Runtime(environment_variables={"WANDB_API_KEY": {"name": "no_such_secret"}}),
    )
    done = wait_terminal(client, job)
    assert done.status == S.DEPLOY_FAILED
    assert done.error_message == (
        "secret 'no_such_secret' (for $WANDB_API_KEY) is not set on this machine; "
        "run `bt-jupyter secrets set no_such_secret`"
    )
    assert "never" not in messages(client, job)


def test_secret_names_are_checked() -> None:
    store = SecretStore.__new__(SecretStore)
    with pytest.raises(ValueError, match="use 1 to 255 letters, digits"):
        store.set("bad name", "x")


def test_project_cache_persists_across_jobs_and_legacy_hf_mount(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    cache = spec.CacheConfig(enabled=True, enable_legacy_hf_cache=True)
    first = submit(
        client,
        project,
        ['echo "from job one" > "$BT_PROJECT_CACHE_DIR/note.txt"', 'echo "hf=$HF_HOME"'],
        runtime=spec.Runtime(cache_config=cache),
    )
    assert wait_terminal(client, first).status == S.COMPLETED
    second = submit(
        client,
        project,
        [
            'cat "$BT_PROJECT_CACHE_DIR/note.txt"',
            'test -d "$BT_TEAM_CACHE_DIR" && echo team-ok',
            'test "$BT_RW_CACHE_DIR" = "$BT_PROJECT_CACHE_DIR" && echo rw-ok',
        ],
        runtime=spec.Runtime(cache_config=spec.CacheConfig(enabled=True)),
    )
    assert wait_terminal(client, second).status == S.COMPLETED
    out = messages(client, second)
    assert "from job one" in out
    assert "team-ok" in out
    assert "rw-ok" in out
    hf = next(m for m in messages(client, first) if m.startswith("hf="))
    assert hf.endswith("/huggingface")
    assert project.id in hf
    summary = client.cache_summary(project.id)
    assert [f.path for f in summary.file_summaries] == ["note.txt"]


def test_no_cache_means_no_cache_variables(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(client, project, ['echo "cache=[${BT_PROJECT_CACHE_DIR:-}]"'])
    assert wait_terminal(client, job).status == S.COMPLETED
    assert "cache=[]" in messages(client, job)


def _loading(reference: spec.LatestCheckpoint | spec.NamedCheckpoint) -> spec.Runtime:
    return spec.Runtime(
        load_checkpoint_config=spec.LoadCheckpointConfig(enabled=True, checkpoints=[reference])
    )


def test_load_named_and_latest_checkpoints(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    source = checkpointing_job(client, project, ["checkpoint-1", "checkpoint-2"])
    named = submit(
        client,
        project,
        ['cat "$BT_LOAD_CHECKPOINT_DIR/rank-0/checkpoint-1/weights.txt"'],
        runtime=_loading(spec.BasetenCheckpoint.from_named_checkpoint("checkpoint-1", source.id)),
    )
    assert wait_terminal(client, named).status == S.COMPLETED
    assert "checkpoint-1" in messages(client, named, node="0")
    latest = submit(
        client,
        project,
        ['ls "$BT_LOAD_CHECKPOINT_DIR/rank-0"'],
        runtime=_loading(spec.BasetenCheckpoint.from_latest_checkpoint(project_name=project.name)),
    )
    assert wait_terminal(client, latest).status == S.COMPLETED
    assert messages(client, latest, node="0") == ["checkpoint-2"]


def test_loading_a_missing_checkpoint_is_deploy_failed(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    source = checkpointing_job(client, project, ["checkpoint-1"])
    job = submit(
        client,
        project,
        ["echo never"],
        runtime=_loading(spec.BasetenCheckpoint.from_named_checkpoint("checkpoint-9", source.id)),
    )
    done = wait_terminal(client, job)
    assert done.status == S.DEPLOY_FAILED
    assert done.error_message == f"job {source.id} has no checkpoint named 'checkpoint-9'"


def test_a_requirements_file_alone_installs_nothing(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    """A node installs only what its start commands install: a requirements.txt that no
    command installs leaves the job on the bare image (never this interpreter)."""
    job = submit(
        client,
        project,
        ['python -c "import sys; print(sys.prefix)"', 'python -c "import httpx"'],
        files=requirements("httpx"),
    )
    done = wait_terminal(client, job)
    assert done.status == S.FAILED
    assert "No module named 'httpx'" in (done.error_message or "")
    # found by what it says: stdout and stderr are two pipes, and a saturated machine may
    # read the next command's traceback first (as a Kubernetes node may)
    printed = messages(client, job, node="0")
    assert sys.prefix not in printed
    assert [m for m in printed if m.startswith("/") and m.endswith("env-node-0")], printed


def test_installed_requirements_are_a_cached_layer(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    files = {"requirements.txt": "tomli-w==1.0.0\n"}
    command = [
        INSTALL,
        "python -c \"import tomli_w, sys; print(tomli_w.dumps({'ok': 1}).strip(), sys.prefix)\"",
    ]
    first = submit(client, project, command, files=files)
    done = wait_terminal(client, first, timeout=300)
    assert done.status == S.COMPLETED, done.error_message
    out = messages(client, first)
    # built by this job, or by an earlier run on this machine (the cache is machine-wide)
    assert any(m.startswith(("Requirements: building layer", "Requirements: cached")) for m in out)
    assert any(m.startswith("ok = 1 ") and m.endswith("env-node-0") for m in out)
    second = submit(client, project, command, files=files)
    assert wait_terminal(client, second).status == S.COMPLETED
    out = messages(client, second)
    assert any(m.startswith("Requirements: cached layer") for m in out)
    assert any("Requirement already satisfied: tomli-w==1.0.0" in m for m in out)


def test_a_requirement_that_cannot_install_fails_the_job_with_pips_words(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        [INSTALL, "echo never"],
        files={"requirements.txt": "bt-jupyter-no-such-dist==0.0.1\n"},
    )
    done = wait_terminal(client, job, timeout=300)
    assert done.status == S.FAILED  # as on Baseten: the start command fails, not the deploy
    assert "bt-jupyter-no-such-dist" in (done.error_message or "")
    assert "never" not in messages(client, job)


def test_gpu_request_runs_on_cpu_and_says_so_first(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client, project, ['echo "gpus=$BT_NUM_GPUS"'], compute=spec.Compute(accelerator="H100:2")
    )
    assert wait_terminal(client, job).status == S.COMPLETED
    out = messages(client, job)
    notes = [m for m in out if m.startswith("No GPU for this job")]
    assert notes == [
        "No GPU for this job on this machine (0 free, 1 x H100:2 requested): running on CPU"
    ]
    assert out[0] == notes[0]
    assert "gpus=0" in out
