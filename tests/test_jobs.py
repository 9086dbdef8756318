"""The Python API: Client (local and Baseten key lookup), push, jobs, Job handles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bt_jupyter import Client, Job, JobFailed, spec
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.jobs import MissingApiKey, NoSuchJob, find_api_key
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id

S = spec.TrainingJobStatus


@pytest.fixture
def bt(local_home: Home) -> Iterator[Client]:
    with Client.local(local_home.root) as client:
        yield client


def test_push_a_truss_train_project_with_a_source_dir(bt: Client, tmp_path: Path) -> None:
    truss_train = pytest.importorskip("truss_train")
    (tmp_path / "train.py").write_text("import sys\nprint('training with', sys.argv[1])\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "junk.pyc").write_bytes(b"x")
    name = f"push-{new_id()}"
    project = truss_train.TrainingProject(
        name=name,
        job=truss_train.TrainingJob(
            image=truss_train.Image(base_image="python:3.11-slim"),
            runtime=truss_train.Runtime(start_commands=["python train.py lora", "ls"]),
        ),
    )
    job = bt.push(project, source_dir=tmp_path)
    assert isinstance(job, Job)
    assert job.project == name
    assert job.wait(timeout=60).status == S.COMPLETED
    out = [line.message for line in job.logs(node=0)]
    assert out == ["training with lora", "train.py"]  # __pycache__ did not travel
    assert [j.id for j in bt.jobs(project=name)] == [job.id]
    assert [j.id for j in bt.jobs(project=name, status="completed")] == [job.id]
    assert bt.jobs(project=name, status=S.RUNNING) == []
    assert bt.jobs(project=f"none-{new_id()}") == []
    again = bt.job(job.id)
    assert (again.id, again.status, again.project) == (job.id, S.COMPLETED, name)
    assert "COMPLETED" in repr(again)

    # truss train push's flags: --entrypoint replaces the start commands (and says so)
    with pytest.warns(UserWarning, match=r"start_commands .* replaced by 'python train.py full'"):
        flagged = bt.push(project, tmp_path, entrypoint="python train.py full", priority=4)
    assert flagged.wire.priority == 4
    assert flagged.wait(timeout=60).status == S.COMPLETED
    assert [line.message for line in flagged.logs(node=0)] == ["training with full"]
    with pytest.raises(InvalidConfigError, match="node_count"):
        bt.push(project, tmp_path, node_count=0)


def test_wait_raises_with_the_error_message(bt: Client) -> None:
    project = spec.TrainingProject(
        name=f"fail-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(start_commands=["echo 'RuntimeError: bad batch' >&2", "exit 3"]),
        ),
    )
    job = bt.submit(project)
    with pytest.raises(
        JobFailed, match=r"FAILED: node 0 exited with code 3: RuntimeError: bad batch"
    ):
        job.wait(timeout=60)
    second = job.recreate()
    assert second.id != job.id
    with pytest.raises(JobFailed):
        second.wait(timeout=60)


def test_unknown_job_is_a_clear_error(bt: Client) -> None:
    with pytest.raises(NoSuchJob, match="no job 'nope123' on the local backend"):
        bt.job("nope123")


def test_baseten_key_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trussrc = tmp_path / ".trussrc"
    trussrc.write_text(
        "[baseten]\nremote_provider = baseten\napi_key = key-from-file\n"
        "remote_url = https://app.baseten.co\n\n"
        "[staging]\nremote_provider = baseten\napi_key = staging-key\n"
        "remote_url = https://app.staging.baseten.co\n\n"
        "[bt-local]\nremote_provider = baseten\napi_key = local-key\n"
        "remote_url = http://localhost:8000\n"
    )
    monkeypatch.setenv("USER_TRUSSRC_PATH", str(trussrc))
    monkeypatch.delenv("BASETEN_API_KEY", raising=False)
    assert find_api_key() == find_api_key(remote="baseten")
    assert find_api_key().value == "key-from-file"
    assert find_api_key(remote="staging").source == f"{trussrc} [staging]"
    # a profile's remote_url picks the REST API, as truss does; a local service is its own
    assert find_api_key(remote="staging").api_url == "https://api.staging.baseten.co"
    with Client.baseten(remote="bt-local") as local_profile:
        assert local_profile.url == "http://localhost:8000"
    monkeypatch.setenv("BASETEN_API_KEY", "key-from-env")
    assert find_api_key().source == "$BASETEN_API_KEY"
    assert find_api_key("explicit").source == "the api_key argument"
    with Client.baseten() as client:
        assert (client.backend.name, client.url) == ("baseten", "https://api.baseten.co")
    monkeypatch.delenv("BASETEN_API_KEY")
    trussrc.unlink()
    with pytest.raises(MissingApiKey, match="set BASETEN_API_KEY, or run `truss login`"):
        find_api_key()


def test_logs_follow_live_for_one_node(bt: Client) -> None:
    project = spec.TrainingProject(
        name=f"follow-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            compute=spec.Compute(node_count=2),
            runtime=spec.Runtime(
                start_commands=['for i in 1 2 3; do echo "n$BT_NODE_RANK $i"; sleep 0.1; done']
            ),
        ),
    )
    job = bt.submit(project)
    followed = [line.message for line in job.logs(follow=True, node=1)]
    assert followed == ["n1 1", "n1 2", "n1 3"]
    assert job.refresh().status == S.COMPLETED
