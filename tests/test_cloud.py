"""The Baseten cloud path, without the internet: the local service in "baseten" mode.

The service hands out blob credentials for an S3-compatible bucket (a moto server) and
its runners fetch bundles from there, as Baseten's do. The client talks to it exactly as
it talks to api.baseten.co: no local extensions, uploads through S3, logs by polling; and
every exchange on a spec path is checked against Baseten's OpenAPI spec.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import Client, Job, remote, spec
from bt_jupyter.backends.baseten import deploy as cloud_deploy
from bt_jupyter.backends.baseten.deploy import DeployError
from bt_jupyter.backends.baseten.teams import UnknownTeam
from bt_jupyter.backends.baseten.upload import upload_bundle
from bt_jupyter.client import ApiClient, AuthError, GraphQLError
from bt_jupyter.deployments import CloudDeployment, DeploymentFailed
from bt_jupyter.errors import BtJupyterError, InvalidConfigError
from bt_jupyter.local.daemon import ServiceInfo
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import PackageOptions, package_cell
from bt_jupyter.packaging.bundle import SessionMode
from bt_jupyter.remote import keys
from tests.helpers import INSTALL, bundle, requirements, running_service, wait_for, wait_job
from tests.openapi import OpenAPI
from tests.test_deploy import LORA, TINY_GPT
from tests.test_local_contract import Recorder, _contract_problems

boto3 = pytest.importorskip("boto3")
ClientError = pytest.importorskip("botocore.exceptions").ClientError
BUCKET = "bt-training-artifacts"
TEAMS = "Personal=personal,Research Lab=team42"


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
        BT_JUPYTER_SERVICE_TEAMS=TEAMS,
    ):
        yield home


def _cloud_env(home: Home, s3_endpoint: str, records: Path, mp: pytest.MonkeyPatch) -> ServiceInfo:
    """The environment of a notebook pointed at the stand-in instead of api.baseten.co."""
    from bt_jupyter.local import daemon

    info = daemon.status(home)
    assert info is not None
    mp.setenv("BASETEN_API_KEY", info.api_key)
    mp.setenv("BT_JUPYTER_BASETEN_URL", info.url)
    mp.setenv("BT_JUPYTER_S3_ENDPOINT_URL", s3_endpoint)
    mp.setenv(
        "BT_JUPYTER_BASETEN_MODEL_URL", f"{info.url}/v1/local/model_gateway/model-{{model_id}}"
    )
    mp.setenv("BT_JUPYTER_HOME", str(records))  # the client's upload records
    return info


@pytest.fixture
def cloud(
    cloud_home: Home, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Client, Recorder]]:
    """``Client.baseten()`` aimed at the stand-in, recording every exchange."""
    info = _cloud_env(cloud_home, s3_endpoint, tmp_path, monkeypatch)
    recorder = Recorder()
    with Client(ApiClient(info.url, info.api_key, transport=recorder), "baseten", "test") as c:
        yield c, recorder


def _bundle(cell: str, **namespace: Any) -> Any:
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    shell.user_ns.update(namespace)
    return package_cell(cell, shell.user_ns, PackageOptions(outputs=("answer",)))


def _off_contract(openapi_spec: dict[str, Any], recorder: Recorder) -> list[str]:
    """What any recorded exchange of a documented operation did against Baseten's spec."""
    openapi = OpenAPI(openapi_spec)
    return [
        problem
        for e in recorder.exchanges
        if openapi.match(e.method, e.path) is not None
        for problem in _contract_problems(openapi, e)
    ]


@pytest.mark.timeout(240)
def test_a_cell_runs_through_s3_and_polling_like_on_baseten(
    cloud: tuple[Client, Recorder], openapi_spec: dict[str, Any], tmp_path: Path
) -> None:
    client, recorder = cloud
    assert not client.api.retry_creates
    bundle = _bundle(
        "import os, time\nfor i in range(5):\n    print('line', i); time.sleep(0.1)\n"
        "answer = base * 2\n"
        "os.makedirs(os.environ['BT_CHECKPOINT_DIR'] + '/checkpoint-5/sub')\n"
        "open(os.environ['BT_CHECKPOINT_DIR'] + '/checkpoint-5/sub/w.txt', 'w').write(str(answer))",
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
    followed = [f.log for f in job.follow()]  # polling: no /v1/local/ follow
    lines = [line.message for line in followed]
    # some lines reach Baseten's log API late, after newer ones: compare in time order
    in_time = [x.message for x in sorted(followed, key=lambda x: int(x.timestamp))]
    assert [m for m in in_time if m.startswith("line")] == [f"line {i}" for i in range(5)]
    assert any(m.startswith(f"Downloaded s3://{BUCKET}/training/") for m in lines)
    assert len(lines) == len(set(lines))
    assert job.refresh().status == spec.TrainingJobStatus.COMPLETED
    assert job.outputs() == {"answer": 42}
    # truss train get_checkpoint_urls / download, through Baseten's API and S3
    urls = json.loads(job.checkpoint_urls(tmp_path).read_text())["checkpoint_artifacts"]
    assert urls
    assert httpx.get(urls[0]["url"], timeout=30).content  # presigned: no key needed
    # one checkpoint back in the notebook, through the file URLs Baseten's API returns
    (checkpoint,) = job.checkpoints()
    folder = checkpoint.download(tmp_path / "checkpoint", progress=False)
    assert (folder / "sub" / "w.txt").read_text() == "42"
    assert checkpoint.path == folder
    unpacked = job.download_artifact(tmp_path)
    got = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())
    assert got == sorted(bundle.files)

    again = client.submit(project, bundle)  # unchanged bundle: not uploaded twice
    assert again.wait(timeout=60).status == spec.TrainingJobStatus.COMPLETED
    credentials = [e for e in recorder.exchanges if e.path == "/v1/blobs/credentials/train"]
    assert len(credentials) == 1

    local = [e for e in recorder.exchanges if e.path.startswith("/v1/local/")]
    assert [e.path for e in local if "checkpoint_files" not in e.path] == []
    assert _off_contract(openapi_spec, recorder) == []


@pytest.mark.timeout(300)
def test_a_sweep_runs_as_jobs_of_one_project_and_compares_through_s3(
    cloud: tuple[Client, Recorder], openapi_spec: dict[str, Any]
) -> None:
    """Each run a job of the same project, its bundle through S3; compare reads each
    bundle's manifest from its presigned S3 URL and stops after it."""
    client, recorder = cloud
    cell = (
        "from bt_jupyter.runtime import log_metrics\n"
        "for step in range(3):\n    log_metrics(step=step, loss=lr / (step + 1))"
    )
    project = f"cloud-sweep-{new_id()}"
    sweep = client.sweep(cell, {"lr": [1.0, 2.0]}, project, namespace={}, max_parallel=1)
    sweep.wait(timeout=120, poll=0.2)
    assert [r.status for r in sweep.runs] == ["COMPLETED", "COMPLETED"]
    assert {job.project for job in sweep.jobs} == {project}
    assert sweep.best("loss").label == "sweep lr=1"
    table = sweep.compared().text()
    assert "value lr" in table
    assert "1.0" in table
    assert "2.0" in table
    assert _off_contract(openapi_spec, recorder) == []


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


def test_a_plain_local_service_takes_uploads_on_its_own_s3_endpoint(
    local_home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blob credentials of the local service name its S3 stand-in (``creds.endpoint_url``),
    so a client without local extensions (and truss) uploads there: multipart included."""
    from bt_jupyter.local import daemon

    info = daemon.status(local_home)
    assert info is not None
    monkeypatch.delenv("BT_JUPYTER_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("BT_JUPYTER_HOME", str(tmp_path))  # the client's upload records
    big = io.BytesIO()
    with tarfile.open(fileobj=big, mode="w") as tar:
        for name, data in (
            ("train.py", b"print('came through S3')"),
            ("data.bin", os.urandom(9 << 20)),
        ):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    archive = big.getvalue()  # over the 8 MiB part size: a multipart upload
    with Client(ApiClient(info.url, info.api_key), "baseten", "test") as client:
        artifact, sent = upload_bundle(client.api, archive, progress=lambda s, t: None)
        assert (sent, artifact.s3_bucket) == (len(archive), "bt-jupyter-local")
        stored = local_home.artifact_file(artifact.s3_key)
        assert stored is not None
        assert stored.read_bytes() == archive
        project = client.api.upsert_project(f"s3-stand-in-{new_id()}")
        job = spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(start_commands=["python train.py"]),
        )
        done = Job(client, client.api.create_job(project.id, job, [artifact])).wait(timeout=60)
        assert "came through S3" in [line.message for line in done.logs()]

        creds = client.api.blob_credentials().creds
    s3 = boto3.client("s3", endpoint_url=creds.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="NOTISSUED", aws_secret_access_key="x")  # fmt: skip
    with pytest.raises(
        boto3.exceptions.botocore.exceptions.ClientError, match="InvalidAccessKeyId"
    ):
        s3.put_object(Bucket="bt-jupyter-local", Key="training/x/bundle.tar", Body=b"x")


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


# --------------------------------------------------------------------------- deploy, teams


def _train(client: Client, script: str, gpu: str | None = "H100:1", **env: str) -> Job:
    """A job whose files are ``train.py``, submitted through S3 like on Baseten."""
    needs = requirements("torch", "tokenizers", "transformers", "peft", "safetensors")
    artifact, _ = upload_bundle(client.api, bundle({"train.py": script, **needs}))
    project = client.api.upsert_project(f"cloud-deploy-{new_id()}")
    job = spec.TrainingJob(
        image=spec.Image(base_image="python:3.11-slim"),
        compute=spec.Compute(accelerator=gpu) if gpu else spec.Compute(),
        runtime=spec.Runtime(
            start_commands=[INSTALL, "python train.py"],
            environment_variables=env,
            checkpointing_config=spec.CheckpointingConfig(enabled=True),
        ),
    )
    return wait_job(Job(client, client.api.create_job(project.id, job, [artifact])))


@pytest.fixture(scope="module")
def trained_ids(
    cloud_home: Home, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(a job with a full checkpoint, a job with LoRA adapters of rank 8 and 4 on it)."""
    with pytest.MonkeyPatch.context() as mp:
        info = _cloud_env(cloud_home, s3_endpoint, tmp_path_factory.mktemp("records"), mp)
        with Client(ApiClient(info.url, info.api_key), "baseten", "test") as client:
            full = _train(client, TINY_GPT)
            base = cloud_home.job_dir(full.id) / "checkpoints" / "rank-0" / "checkpoint-120"
            lora = _train(client, TWO_ADAPTERS, BASE=str(base))
    assert (full.status, lora.status) == (spec.TrainingJobStatus.COMPLETED,) * 2
    SecretStore(cloud_home).set("hf_access_token", "hf-secret-value")
    return full.id, lora.id


#: The base travels with the job's files (a relative name, as a hub id is): Baseten
#: refuses to deploy an adapter whose base is a path on the training node.
RELATIVE_BASE = (
    "import os, shutil\n"
    "shutil.copytree(os.environ['BASE'], 'checkpoint-120', dirs_exist_ok=True)\n"
    "os.environ['BASE'] = 'checkpoint-120'\n"
)
ON_A_PATH = """
import json, os, pathlib
folder = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "lora-path"
folder.mkdir()
(folder / "adapter_config.json").write_text(
    json.dumps({"r": 8, "base_model_name_or_path": "/models/base", "peft_type": "LORA"})
)
(folder / "adapter_model.safetensors").write_bytes(b"0" * 100)
"""
TWO_ADAPTERS = (
    RELATIVE_BASE
    + LORA.replace("r=4", "r=8").replace("lora-3", "lora-8")
    + LORA.replace("lora-3", "lora-4")
)


def _truss_graphql(operation: str, *args: Any) -> tuple[str, dict[str, Any] | None]:
    """The query and variables Baseten's own CLI (truss) sends for ``operation``."""
    from truss.remote.baseten.api import BasetenApi

    sent: list[tuple[str, dict[str, Any] | None]] = []
    answers = {
        "create_model_version_from_inference_template": {
            "data": {"create_model_version_from_inference_template": {}}
        },
        "get_teams": {"data": {"teams": []}},
        "get_instance_types": {"data": {"listedInstances": []}},
    }

    def capture(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        sent.append((query, variables))
        return answers[operation]

    class NoAuth:
        def fetch_auth_header(self) -> dict[str, str]:
            return {}

    truss_api = BasetenApi("https://app.baseten.co", auth_service=NoAuth())  # type: ignore[arg-type]
    truss_api._post_graphql_query = capture  # type: ignore[method-assign]
    getattr(truss_api, operation)(*args)
    return sent[0]


def _graphql_sent(recorder: Recorder, field: str) -> list[dict[str, Any]]:
    bodies = [json.loads(e.request_body) for e in recorder.exchanges if e.path == "/graphql/"]
    return [b for b in bodies if field in b["query"]]


def _instances_served(recorder: Recorder) -> Any:
    """The instance types the stand-in last answered a ``listed_instances`` query with."""
    answers = [json.loads(e.response_body) for e in recorder.exchanges
               if e.path == "/graphql/" and b"listed_instances" in e.request_body]  # fmt: skip
    return answers[-1]["data"]["listedInstances"]


def _one_line(query: str) -> str:
    return " ".join(query.split())


def _truss_request(
    job_id: str, checkpoint: str, name: str, instances: Any, rank: int | None
) -> Any:
    """What ``truss train deploy_checkpoints`` builds for the same choice, by truss's code."""
    from truss.base.truss_config import AcceleratorSpec
    from truss.cli.train.deploy_checkpoints.deploy_checkpoints import (
        _build_inference_template_request,
    )
    from truss.cli.train.types import DeployCheckpointsConfigComplete
    from truss.remote.baseten.api import InstanceTypeV1
    from truss_train import definitions as d

    class Remote:
        class api:
            @staticmethod
            def get_instance_types() -> list[InstanceTypeV1]:
                return [InstanceTypeV1(**i) for i in instances]

    ckpt: Any = (
        d.LoRACheckpoint(
            training_job_id=job_id,
            checkpoint_name=checkpoint,
            lora_details=d.LoRADetails(rank=rank),
        )
        if rank
        else d.FullCheckpoint(training_job_id=job_id, checkpoint_name=checkpoint)
    )
    config = DeployCheckpointsConfigComplete(
        checkpoint_details=d.CheckpointList(checkpoints=[ckpt]),
        model_name=name,
        compute=d.Compute(accelerator=AcceleratorSpec(accelerator="H100", count=1)),
        runtime=d.DeployCheckpointsRuntime(
            environment_variables={"HF_TOKEN": d.SecretReference(name="hf_access_token")}
        ),
    )
    return _build_inference_template_request(config, Remote(), dry_run=False)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
def test_a_checkpoint_deploys_with_the_graphql_baseten_s_cli_sends(
    cloud: tuple[Client, Recorder], trained_ids: tuple[str, str]
) -> None:
    client, recorder = cloud
    job = client.job(trained_ids[0])
    deployment = job.deploy("checkpoint-120", name="tiny-gpt", hf_secret="hf_access_token")
    assert isinstance(deployment, CloudDeployment)
    assert deployment.wait(timeout=180).status == "ACTIVE"
    assert deployment.complete("the cat", max_tokens=3).strip()
    assert deployment.logs(), "the serving process logged nothing"

    # the exact operations truss sends: same query text, same variables
    mutation = _graphql_sent(recorder, "create_model_version_from_inference_template")
    assert len(mutation) == 1
    instances = _instances_served(recorder)
    query, variables = _truss_graphql(
        "create_model_version_from_inference_template", mutation[0]["variables"]["request"]
    )
    assert _one_line(mutation[0]["query"]) == _one_line(query)
    expected = _truss_request(job.id, "checkpoint-120", "tiny-gpt", instances, rank=None)
    assert mutation[0]["variables"] == {"request": expected} == variables
    assert expected["instance_type_id"] == "H100:1x26x234"  # the job's GPU, fewest of them
    [instances_query] = _graphql_sent(recorder, "listed_instances")
    assert _one_line(instances_query["query"]) == _one_line(_truss_graphql("get_instance_types")[0])

    deployment.stop()
    assert deployment.status == "INACTIVE"
    with pytest.raises(DeploymentFailed, match="is INACTIVE; deploy the checkpoint again"):
        deployment.complete("the cat")


@pytest.mark.timeout(300)
def test_a_lora_adapter_deploys_with_the_rank_of_its_adapter_config(
    cloud: tuple[Client, Recorder], trained_ids: tuple[str, str]
) -> None:
    client, recorder = cloud
    job = client.job(trained_ids[1])
    plan = cloud_deploy.plan(client.api, job._wire, "lora-8")
    assert (plan.lora_rank, plan.model_name) == (8, "checkpoint-120")  # named after its base
    deployment = job.deploy("lora-8", hf_secret="hf_access_token").wait(timeout=180)
    assert deployment.complete("the cat", max_tokens=2).strip()
    instances = _instances_served(recorder)
    [sent] = _graphql_sent(recorder, "create_model_version_from_inference_template")
    assert sent["variables"]["request"] == _truss_request(
        job.id, "lora-8", "checkpoint-120", instances, rank=8
    )
    deployment.stop()

    before = len(recorder.exchanges)
    with pytest.raises(DeployError, match=r"LoRA adapter of rank 4.*train with r in 8, 16, 32"):
        job.deploy("lora-4")
    assert all(b"create_model" not in e.request_body for e in recorder.exchanges[before:])


def test_deploy_mistakes_are_named_before_anything_is_created(
    cloud: tuple[Client, Recorder], trained_ids: tuple[str, str]
) -> None:
    client, recorder = cloud
    job = client.job(trained_ids[0])
    with pytest.raises(DeployError, match="no checkpoint 'checkpoint-9'; it has checkpoint-120"):
        job.deploy("checkpoint-9")
    with pytest.raises(DeployError, match=r"no single-node instance type has B200:4.*H100:8"):
        job.deploy(gpu="B200:4")
    with pytest.raises(InvalidConfigError, match="unknown accelerator 'X9'"):
        job.deploy(gpu="X9:1")
    with pytest.raises(DeployError, match="model name 'my model!' may only use"):
        job.deploy(name="my model!")
    with pytest.raises(BtJupyterError, match="model= and port= are for the local backend"):
        job.deploy(port=9000)
    # an adapter on a base that was a path on the training node: no inference node has it
    on_a_path = _train(client, ON_A_PATH)
    with pytest.raises(DeployError, match="'/models/base', a path on the job's node"):
        on_a_path.deploy("lora-path")
    assert _graphql_sent(recorder, "create_model_version_from_inference_template") == []

    # the stand-in refuses what Baseten would, as a GraphQL error with the reason
    request = cloud_deploy.plan(client.api, job._wire).request | {"instance_type_id": "nope"}
    with pytest.raises(GraphQLError, match="instance type 'nope' does not exist"):
        cloud_deploy.create(client.api, request)
    broken = request | {"inference_stack": {"stack_type": "TRT", "environment_variables": []}}
    with pytest.raises(GraphQLError, match=r"inference_stack\.stack_type"):
        cloud_deploy.create(client.api, broken)


def test_team_names_resolve_to_ids_like_truss_train_push(
    cloud: tuple[Client, Recorder], trained_ids: tuple[str, str]
) -> None:
    client, recorder = cloud
    project = spec.TrainingProject(
        name=f"team-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(start_commands=["true"]),
        ),
    )
    job = client.submit(project, team="Research Lab")
    assert job.wait(timeout=60).status == spec.TrainingJobStatus.COMPLETED
    assert "/v1/teams/team42/training_projects" in [e.path for e in recorder.exchanges]
    [teams_query] = _graphql_sent(recorder, "teams")
    assert _one_line(teams_query["query"]) == _one_line(_truss_graphql("get_teams")[0])

    before = len(recorder.exchanges)
    with pytest.raises(UnknownTeam, match=r"no team 'Nope'.*'Personal', 'Research Lab'"):
        client.submit(project, team="Nope")
    assert all("training_projects" not in e.path for e in recorder.exchanges[before:])


LIVE_KEY = os.environ.get("BASETEN_API_KEY")


@pytest.mark.skipif(not LIVE_KEY, reason="BASETEN_API_KEY is not set: no live Baseten test")
def test_live_baseten_answers_the_same_api() -> None:
    with Client.baseten(api_key=LIVE_KEY, base_url="https://api.baseten.co") as client:
        assert isinstance(client.api.projects(), list)


@pytest.mark.timeout(300)
def test_a_live_session_goes_through_baseten_s_ssh_sign_and_proxy(
    cloud: tuple[Client, Recorder],
    cloud_home: Home,
    openapi_spec: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cloud client's session: ssh/sign as the spec has it, then TLS to the proxy
    (checked against the system's trust store, here the stand-in's certificate), JWT,
    certificate, and the kernel's ports forwarded through SSH (no /v1/local/ shortcut)."""
    client, recorder = cloud
    monkeypatch.setenv("BASETEN_SSH_DIR", str(tmp_path / "ssh"))
    project = spec.TrainingProject(
        name=f"cloud-live-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image="pending"),
            compute=spec.Compute(accelerator="H100:1"),
            runtime=spec.Runtime(),
        ),
    )
    session = remote.start(client, project, PackageOptions(session=SessionMode(idle_timeout_s=300)))
    try:
        # the stand-in's proxy (and its certificate) starts with a first signature
        line = keys.public_line(keys.ensure_key())
        session._wait_running(lambda _: None)
        client.api.sign_ssh(session.job.project_id, session.id, line, 0)
        monkeypatch.setenv("SSL_CERT_FILE", str(cloud_home.root / "ssh" / "proxy.crt"))
        shown: list[str] = []
        results = session.run(
            "answer = 6 * 7\nprint('node says', answer)",
            [0],
            lambda o: shown.append(o.content.get("text", "")),
        )
        assert results[0].status == "ok"
        assert "node says 42" in "".join(shown)
        assert session.pull(["answer"], 0, 1_000_000) == {"answer": 42}
    finally:
        session.stop()
    signs = [e for e in recorder.exchanges if e.path.endswith("/ssh/sign")]
    assert signs
    assert all(e.status == 200 for e in signs)
    assert [e.path for e in recorder.exchanges if e.path.startswith("/v1/local/")] == []
    assert _off_contract(openapi_spec, recorder) == []
