"""The Baseten cloud path, without the internet: the local service in "baseten" mode.

The service hands out blob credentials for an S3-compatible bucket (a moto server) and
its runners fetch bundles from there, as Baseten's do. The client talks to it exactly as
it talks to api.baseten.co: no local extensions, uploads through S3, logs by polling; and
every exchange on a spec path is checked against Baseten's OpenAPI spec.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import Client, spec
from bt_jupyter.client import ApiClient, AuthError
from bt_jupyter.cloud.upload import upload_bundle
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import PackageOptions, package_cell
from tests.helpers import running_service, wait_for
from tests.openapi import OpenAPI
from tests.test_local_contract import Recorder, _contract_problems

boto3 = pytest.importorskip("boto3")
BUCKET = "bt-training-artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server with the training bucket."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, "the moto S3 server", every=0.2)
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.fixture(scope="module")
def cloud_home(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = Home(tmp_path_factory.mktemp("baseten_mode"))
    with running_service(
        home,
        BT_JUPYTER_SERVICE_S3_ENDPOINT=s3_endpoint,
        BT_JUPYTER_SERVICE_S3_BUCKET=BUCKET,
    ):
        yield home


@pytest.fixture
def cloud(
    cloud_home: Home, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Client, Recorder]]:
    """``Client.baseten()`` aimed at the stand-in, recording every exchange."""
    from bt_jupyter.local import daemon

    info = daemon.status(cloud_home)
    assert info is not None
    monkeypatch.setenv("BASETEN_API_KEY", info.api_key)
    monkeypatch.setenv("BT_JUPYTER_BASETEN_URL", info.url)
    monkeypatch.setenv("BT_JUPYTER_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("BT_JUPYTER_HOME", str(tmp_path))  # the client's upload records
    recorder = Recorder()
    with Client(ApiClient(info.url, info.api_key, transport=recorder), "baseten", "test") as c:
        yield c, recorder


def _bundle(cell: str, **namespace: Any) -> Any:
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    shell.user_ns.update(namespace)
    return package_cell(cell, shell.user_ns, PackageOptions(outputs=("answer",)))


@pytest.mark.timeout(240)
def test_a_cell_runs_through_s3_and_polling_like_on_baseten(
    cloud: tuple[Client, Recorder], openapi_spec: dict[str, Any]
) -> None:
    client, recorder = cloud
    assert not client.api.local_extensions
    bundle = _bundle(
        "import time\nfor i in range(5):\n    print('line', i); time.sleep(0.1)\nanswer = base * 2",
        base=21,
    )
    project = spec.TrainingProject(
        name=f"cloud-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image=bundle.base_image),
            compute=spec.Compute(accelerator="H100:1", availability_model="spot"),
            runtime=spec.Runtime(
                start_commands=bundle.start_commands,
                checkpointing_config=spec.CheckpointingConfig(enabled=True),
            ),
        ),
    )
    job = client.submit(project, bundle)
    lines = [f.log.message for f in job.follow()]  # polling: no /v1/local/ follow
    assert [m for m in lines if m.startswith("line")] == [f"line {i}" for i in range(5)]
    assert any(m.startswith(f"Downloaded s3://{BUCKET}/training/") for m in lines)
    assert len(lines) == len(set(lines))
    assert job.refresh().status == spec.TrainingJobStatus.COMPLETED
    assert job.outputs() == {"answer": 42}

    again = client.submit(project, bundle)  # unchanged bundle: not uploaded twice
    assert again.wait(timeout=60).status == spec.TrainingJobStatus.COMPLETED
    credentials = [e for e in recorder.exchanges if e.path == "/v1/blobs/credentials/train"]
    assert len(credentials) == 1

    openapi = OpenAPI(openapi_spec)
    local = [e for e in recorder.exchanges if e.path.startswith("/v1/local/")]
    assert [e.path for e in local if "checkpoint_files" not in e.path] == []
    problems = [
        p
        for e in recorder.exchanges
        if openapi.match(e.method, e.path) is not None
        for p in _contract_problems(openapi, e)
    ]
    assert problems == []


def test_upload_is_multipart_with_progress_and_remembered(
    cloud: tuple[Client, Recorder], s3_endpoint: str
) -> None:
    client, _ = cloud
    data = os.urandom(20 * 1024 * 1024)  # over the 8 MiB part size: a multipart upload
    seen: list[tuple[int, int]] = []
    artifact, sent = upload_bundle(client.api, data, progress=lambda s, t: seen.append((s, t)))
    assert sent == len(data)
    assert seen[-1] == (len(data), len(data))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
    stored = s3.get_object(Bucket=artifact.s3_bucket, Key=artifact.s3_key)["Body"].read()
    assert stored == data
    assert upload_bundle(client.api, data) == (artifact, 0)


def test_a_wrong_key_is_one_clear_error_and_not_retried(cloud_home: Home) -> None:
    from bt_jupyter.local import daemon

    info = daemon.status(cloud_home)
    assert info is not None
    recorder = Recorder()
    api_client = ApiClient(info.url, "wrong", transport=recorder)
    with (
        Client(api_client, "baseten", "test") as client,
        pytest.raises(AuthError, match="missing or wrong API key"),
    ):
        client.jobs()
    assert len(recorder.exchanges) == 1


LIVE_KEY = os.environ.get("BASETEN_API_KEY")


@pytest.mark.skipif(not LIVE_KEY, reason="BASETEN_API_KEY is not set: no live Baseten test")
def test_live_baseten_answers_the_same_api() -> None:
    with Client.baseten(api_key=LIVE_KEY, base_url="https://api.baseten.co") as client:
        assert isinstance(client.api.projects(), list)
