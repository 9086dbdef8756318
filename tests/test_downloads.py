"""A job's files on this disk, as truss fetches them: ``job.checkpoint_urls()`` writes
``truss train get_checkpoint_urls``'s file and ``job.download_artifact()`` fetches what
``truss train download`` does, on the local service (the cloud path: tests/test_cloud)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import httpx
import pytest

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import DownloadError
from bt_jupyter.jobs import Client, Job
from tests.helpers import bundle, checkpointing_job, submit, wait_terminal


def _job(client: ApiClient, wire: api.TrainingJobV1) -> Job:
    return Job(Client(client, "local", wire.training_project.name), wire)


def test_checkpoint_urls_are_written_as_truss_writes_them(
    client: ApiClient, project: api.TrainingProjectV1, tmp_path: Path
) -> None:
    job = _job(client, checkpointing_job(client, project, ["checkpoint-1", "checkpoint-2"]))
    path = job.checkpoint_urls(tmp_path)
    assert path == tmp_path / f"{project.name}_{job.id}_checkpoints.json"
    document = json.loads(path.read_text())
    assert set(document) == {"timestamp", "job", "checkpoint_artifacts"}
    assert document["job"]["id"] == job.id
    files = document["checkpoint_artifacts"]
    assert sorted(f["relative_file_name"] for f in files) == [
        "rank-0/checkpoint-1/weights.txt",
        "rank-0/checkpoint-2/weights.txt",
    ]
    for f in files:  # each URL works as it is, without the API key
        name = f["relative_file_name"].split("/")[1]
        assert httpx.get(f["url"], timeout=30).text.strip() == name
        assert f["size_bytes"] == len(name) + 1


def test_a_job_without_checkpoints_says_so_and_writes_nothing(
    client: ApiClient, project: api.TrainingProjectV1, tmp_path: Path
) -> None:
    job = _job(client, submit(client, project, ["true"]))
    wait_terminal(client, job.wire)
    with pytest.raises(DownloadError, match="no checkpoint files"):
        job.checkpoint_urls(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_artifact_downloads_unpacked_or_as_an_archive(
    client: ApiClient, project: api.TrainingProjectV1, tmp_path: Path
) -> None:
    files = {"train.py": "print('hi')\n", "data/rows.csv": "a,b\n1,2\n"}
    job = _job(client, submit(client, project, ["true"], files))
    unpacked = job.download_artifact(tmp_path)
    assert unpacked == tmp_path / f"{project.name}_{job.id}"
    assert (unpacked / "data" / "rows.csv").read_text() == "a,b\n1,2\n"
    with pytest.raises(DownloadError, match="already exists"):
        job.download_artifact(tmp_path)  # never over a folder that is there
    archive = job.download_artifact(tmp_path, unzip=False)
    assert archive.name == f"{project.name}_{job.id}.tgz"
    assert archive.read_bytes() == bundle(files)
    wait_terminal(client, job.wire)


def test_an_artifact_that_climbs_out_is_refused_and_writes_nothing_outside(
    client: ApiClient, project: api.TrainingProjectV1, tmp_path: Path
) -> None:
    """A bundle (made by anyone with the API) whose members are ``../`` or absolute."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name in ("../escaped.txt", "/tmp/absolute-escape.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    artifact, _ = client.upload_artifact(data.getvalue())
    wire = client.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(start_commands=["true"]),
        ),
        [artifact],
    )
    job = _job(client, wire)
    target = tmp_path / "inside"
    with pytest.raises(DownloadError, match="could not be unpacked"):
        job.download_artifact(target)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (target / f"{project.name}_{job.id}").exists()  # no half-unpacked folder
    assert not Path("/tmp/absolute-escape.txt").exists()
    wait_terminal(client, wire)


# --------------------------------------------------------------------------- one checkpoint


def test_a_checkpoint_downloads_into_a_folder_and_again_fetches_only_whats_missing(
    client: ApiClient,
    project: api.TrainingProjectV1,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = _job(client, checkpointing_job(client, project, ["checkpoint-1", "checkpoint-10"]))
    first, second = job.checkpoints()
    assert first.path is None
    monkeypatch.chdir(tmp_path)
    folder = second.download(progress=False)
    assert folder == tmp_path / "bt_checkpoints" / job.id / "checkpoint-10"
    assert second.path == folder
    # checkpoint-1 is not a prefix match of checkpoint-10: only its own files
    assert sorted(p.name for p in folder.iterdir()) == ["weights.txt"]
    assert (folder / "weights.txt").read_text() == "checkpoint-10\n"
    fetched: list[str] = []
    real = client.download
    monkeypatch.setattr(
        client, "download", lambda url, target: fetched.append(url) or real(url, target)
    )
    (folder / "weights.txt").write_text("x")  # a short, broken copy is fetched again
    assert first.download(tmp_path / "one", progress=False) == tmp_path / "one"
    assert second.download(progress=False) == folder
    assert len(fetched) == 2
    assert second.download(progress=False) == folder
    assert len(fetched) == 2  # all there at their size: nothing fetched
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(DownloadError, match="no files on node 3"):
        second.download(tmp_path / "x", node=3)


@pytest.mark.parametrize(
    "name", ["../../escaped.txt", "/etc/passwd", "rank-0/checkpoint-1/../../../x", "a\x00b"]
)
def test_a_checkpoint_file_name_that_climbs_out_is_refused(
    client: ApiClient,
    project: api.TrainingProjectV1,
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = _job(client, checkpointing_job(client, project, ["checkpoint-1"]))
    (checkpoint,) = job.checkpoints()
    listed = job.checkpoint_files()
    evil = [listed[0].model_copy(update={"relative_file_name": name})]
    monkeypatch.setattr(Job, "checkpoint_files", lambda self: evil)
    with pytest.raises(DownloadError, match="unsafe checkpoint file name"):
        checkpoint.download(tmp_path / "in", progress=False)
    assert not (tmp_path / "in").exists() or not any((tmp_path / "in").iterdir())
    assert not (tmp_path.parent / "escaped.txt").exists()
