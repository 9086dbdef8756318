"""The local service against Baseten's OpenAPI spec: every endpoint, bad input, limits.

The client talks to the session's service through a recording transport; every exchange
on a path of the spec is then checked against the spec (query parameters, JSON request
body, JSON 200 response), and every operation of the spec that the local service
implements must have been exercised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient, ApiError, AuthError, NotFound
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.helpers import bundle, running_service, submit, wait_for, wait_terminal
from tests.openapi import NOT_LOCAL, OpenAPI

S = spec.TrainingJobStatus

CHECKPOINT_BYTES = bytes(range(256)) * 16

TRAIN = """
    import os, pathlib, time
    ckpt = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (ckpt / "weights.bin").write_bytes(bytes(range(256)) * 16)
    print("checkpoint written", flush=True)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        sum(range(10_000))
    print("done", flush=True)
"""


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    query: dict[str, str]
    request_body: bytes
    status: int
    response_type: str
    response_body: bytes

    def __str__(self) -> str:
        query = f"?{'&'.join(f'{k}={v}' for k, v in self.query.items())}" if self.query else ""
        return f"{self.method} {self.path}{query} -> {self.status}"


class Recorder(httpx.BaseTransport):
    """A transport that sends through httpx's own and keeps every exchange."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.exchanges: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self._inner.handle_request(request)
        response.read()
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=request.url.path,
                query=dict(request.url.params),
                request_body=request.content,
                status=response.status_code,
                response_type=response.headers.get("content-type", ""),
                response_body=response.content,
            )
        )
        return response

    def close(self) -> None:
        self._inner.close()


def _service(home: Home) -> daemon.ServiceInfo:
    info = daemon.status(home)
    assert info is not None, f"no service running on {home.root}"
    return info


def _contract_problems(openapi: OpenAPI, exchange: Exchange) -> list[str]:
    """What in one exchange on a spec path disagrees with the spec."""
    operation = openapi.match(exchange.method, exchange.path)
    assert operation is not None
    where = f"{exchange} ({operation.method} {operation.template})"
    problems = [f"{where}: {e}" for e in openapi.query_errors(operation, exchange.query)]
    schema = operation.request_schema()
    if schema is not None:
        try:
            body = json.loads(exchange.request_body)
        except ValueError:
            problems.append(f"{where}: request body is not JSON: {exchange.request_body[:200]!r}")
        else:
            problems += [f"{where}: request: {e}" for e in openapi.schema_errors(schema, body)]
    elif exchange.request_body.strip() not in (b"", b"{}"):
        problems.append(f"{where}: sends a body to an operation that takes none")
    if exchange.status != 200:
        problems.append(f"{where}: expected 200, got {exchange.response_body[:300]!r}")
        return problems
    if not exchange.response_type.startswith("application/json"):
        problems.append(f"{where}: response content-type is {exchange.response_type!r}")
        return problems
    response_schema = operation.response_schema(200)
    if response_schema is None:
        problems.append(f"{where}: the spec has no JSON 200 response for this operation")
        return problems
    answer = json.loads(exchange.response_body)
    problems += [f"{where}: response: {e}" for e in openapi.schema_errors(response_schema, answer)]
    return problems


# --------------------------------------------------------------------------- every endpoint


def test_every_endpoint_matches_the_spec(
    openapi_spec: dict[str, Any], local_home: Home, tmp_path: Path
) -> None:
    openapi = OpenAPI(openapi_spec)
    assert {op.key for op in openapi.operations()} >= NOT_LOCAL, "NOT_LOCAL names unknown ops"
    info = _service(local_home)
    recorder = Recorder()
    with ApiClient(info.url, info.api_key, transport=recorder, retry_creates=True) as c:
        _walk_every_endpoint(c, tmp_path)

    problems: list[str] = []
    exercised: set[tuple[str, str]] = set()
    for exchange in recorder.exchanges:
        operation = openapi.match(exchange.method, exchange.path)
        if operation is None:
            if not exchange.path.startswith("/v1/local/"):
                problems.append(f"{exchange}: neither in the spec nor a /v1/local/ extension")
            continue
        exercised.add(operation.key)
        problems += _contract_problems(openapi, exchange)
    assert not problems, "\n".join(problems)

    missing = {op.key for op in openapi.operations()} - exercised - NOT_LOCAL
    assert not missing, f"spec operations never exercised: {sorted(missing)}"


def _walk_every_endpoint(c: ApiClient, tmp_path: Path) -> None:
    """Use every endpoint of the spec that the local service implements, checking answers."""
    # projects: upsert (plain and per team), list, get
    name = f"contract-{new_id()}"
    project = c.upsert_project(name)
    assert c.upsert_project(name).id == project.id, "upsert by name must not duplicate"
    team_project = c.upsert_project(f"contract-team-{new_id()}", team_id="team-contract")
    assert team_project.team_name == "team-contract"
    listed = {p.id for p in c.projects()}
    assert {project.id, team_project.id} <= listed
    assert c.project(project.id).name == name

    # jobs: create with an uploaded artifact, list, get, search, priority
    data = bundle({"train.py": TRAIN, "nonce.txt": new_id()})
    artifact, sent = c.upload_artifact(data)
    assert sent == len(data)
    assert c.upload_artifact(data) == (artifact, 0), "a known artifact must not be re-sent"
    training_job = spec.TrainingJob(
        image=spec.Image(base_image="python:3.11-slim"),
        runtime=spec.Runtime(
            start_commands=["python train.py"],
            checkpointing_config=spec.CheckpointingConfig(enabled=True),
        ),
        name="contract",
    )
    job = c.create_job(project.id, training_job, [artifact])
    assert [j.id for j in c.jobs(project.id)] == [job.id]
    assert c.job(project.id, job.id).training_job.name == "contract"
    assert [j.id for j in c.search_jobs(project_id=project.id)] == [job.id]
    assert [j.id for j in c.search_jobs(job_id=job.id, statuses=list(S))] == [job.id]

    # capacity and the queue: a team capped at one H100, two gated jobs: the second waits
    # (PENDING), its priority changes, its queue context names the first
    assert c.set_team_capacity("team-contract", "H100", 1).limit == 1
    assert [t.limit for t in c.capacity().team_gpu_capacities if t.team_id == "team-contract"]
    gate = tmp_path / "gate"
    held = [
        submit(
            c,
            team_project,
            ['while [ ! -e "$GATE" ]; do sleep 0.05; done'],
            compute=spec.Compute(accelerator="H100:1"),
            runtime=spec.Runtime(environment_variables={"GATE": str(gate)}),
        )
        for _ in range(2)
    ]
    wait_for(lambda: c.job(team_project.id, held[1].id).training_job.status == S.PENDING, 30,
             "the second capped job to wait")  # fmt: skip
    assert c.set_priority(team_project.id, held[1].id, 5).priority == 5
    context = c.queue_context(held[1].id)
    assert [a.training_job_id for a in context.active_at_submit] == [held[0].id]
    gate.touch()
    for each_job in held:
        assert wait_terminal(c, each_job, timeout=60).status == S.COMPLETED
        c.delete_job(team_project.id, each_job.id)

    # metrics while it runs, then everything a finished job has
    wait_for(lambda: c.metrics(project.id, job.id).cpu_usage, 30, "a metrics sample")
    done = wait_terminal(c, job, timeout=60)
    assert done.status == S.COMPLETED, done.error_message
    path = f"/v1/training_projects/{project.id}/jobs/{job.id}"

    by_get = c.logs(project.id, job.id, direction=api.SortOrderV1.ASC, limit=1000)
    assert "checkpoint written" in [line.message for line in by_get]
    posted = c.request("POST", f"{path}/logs", json={"direction": "asc", "limit": 1000})
    assert api.GetLogsResponseV1.model_validate(posted.json()).logs == by_get

    metrics = c.metrics(project.id, job.id)
    assert metrics.cpu_usage
    now_ms = int(time.time() * 1000)
    posted = c.request(
        "POST", f"{path}/metrics", json={"start_epoch_millis": 0, "end_epoch_millis": now_ms}
    )
    by_post = api.GetTrainingJobMetricsResponseV1.model_validate(posted.json())
    assert by_post.cpu_usage == metrics.cpu_usage

    assert [k.checkpoint_id for k in c.checkpoints(project.id, job.id)] == ["checkpoint-1"]
    files = c.checkpoint_files(project.id, job.id)
    assert [f.relative_file_name for f in files] == ["rank-0/checkpoint-1/weights.bin"]
    target = c.download(files[0].url, tmp_path / "weights.bin")
    assert target.read_bytes() == CHECKPOINT_BYTES

    urls = c.job_artifact_urls(project.id, job.id)
    assert len(urls) == 1
    assert httpx.get(urls[0], timeout=30).content == data

    assert c.cache_summary(project.id).project_id == project.id
    assert c.blob_credentials().s3_key

    # recreate, stop the copy, then delete jobs and projects
    again = c.recreate_job(project.id, job.id)
    assert again.id != job.id
    c.stop_job(project.id, again.id)
    assert wait_terminal(c, again, timeout=30).status == S.STOPPED
    for each in (job, again):
        assert c.delete_job(project.id, each.id).deleted
    for each_project in (project, team_project):
        assert c.delete_project(each_project.id).deleted
    assert not {project.id, team_project.id} & {p.id for p in c.projects()}


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def raw(local_home: Home) -> Iterator[httpx.Client]:
    """Plain httpx against the session service, for requests the typed client won't build."""
    info = _service(local_home)
    headers = {"Authorization": f"Bearer {info.api_key}"}
    with httpx.Client(base_url=info.url, headers=headers, timeout=30) as http:
        yield http


def _counts(client: ApiClient) -> tuple[int, int]:
    return len(client.projects()), len(client.search_jobs())


def _error(response: httpx.Response, status: int) -> str:
    """The message of a JSON error answer, after checking its status and shape."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"code", "message"}, body
    code, message = body["code"], body["message"]
    assert isinstance(code, str), body
    assert isinstance(message, str), body
    assert code, body
    assert message, body
    return message


def _job_body(*changes: tuple[str, Any]) -> bytes:
    """A valid create-job body as the client sends it, with ``("a.b.c", value)`` changes."""
    training_job = spec.TrainingJob(
        image=spec.Image(base_image="python:3.11-slim"),
        runtime=spec.Runtime(start_commands=["true"]),
    )
    body = api.CreateTrainingJobRequestV1(
        training_job=api.CreateTrainingJobV1.of(training_job)
    ).model_dump(mode="json")
    for dotted, value in changes:
        *parents, last = dotted.split(".")
        node = body
        for key in parents:
            node = node[key]
        node[last] = value
    return json.dumps(body).encode()


NEVER_UPLOADED = f"{hashlib.sha256(b'never uploaded').hexdigest()}.tar.gz"


@pytest.mark.parametrize(
    ("content", "status", "fragments"),
    [
        pytest.param(b'{"training_job": {"image": ', 400, ["JSON"], id="malformed-json"),
        pytest.param(
            _job_body(("training_job.bogus_field", 1)), 422, ["bogus_field"], id="unknown-field"
        ),
        pytest.param(
            _job_body(("training_job.compute.accelerator", "H101:8")),
            422,
            ["H101", "H100", "valid"],
            id="unknown-accelerator",
        ),
        pytest.param(
            _job_body(("training_job.compute.node_count", 0)),
            422,
            ["node_count", ">= 1"],
            id="zero-nodes",
        ),
        pytest.param(
            _job_body(
                (
                    "training_job.runtime.artifacts",
                    [{"s3_bucket": api.LOCAL_ARTIFACT_BUCKET, "s3_key": NEVER_UPLOADED}],
                )
            ),
            400,
            [NEVER_UPLOADED],
            id="artifact-never-uploaded",
        ),
    ],
)
def test_bad_job_is_refused_and_nothing_is_created(
    client: ApiClient,
    project: api.TrainingProjectV1,
    raw: httpx.Client,
    content: bytes,
    status: int,
    fragments: list[str],
) -> None:
    before = _counts(client)
    response = raw.post(
        f"/v1/training_projects/{project.id}/jobs",
        content=content,
        headers={"content-type": "application/json"},
    )
    message = _error(response, status)
    for fragment in fragments:
        assert fragment in message
    assert _counts(client) == before
    assert client.jobs(project.id) == []


def test_the_valid_job_body_of_the_bad_input_cases_is_accepted(
    client: ApiClient, project: api.TrainingProjectV1, raw: httpx.Client
) -> None:
    """The cases above fail for their one change, not for the body they start from."""
    response = raw.post(
        f"/v1/training_projects/{project.id}/jobs",
        content=_job_body(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    job = api.CreateTrainingJobResponseV1.model_validate(response.json()).training_job
    assert wait_terminal(client, job, timeout=60).status == S.COMPLETED


def test_unknown_project_and_job_ids_are_404_and_create_nothing(
    client: ApiClient, project: api.TrainingProjectV1, raw: httpx.Client
) -> None:
    job = submit(client, project, ["true"])
    other = client.upsert_project(f"t-other-{new_id()}")
    before = _counts(client)

    missing_project = f"no-project-{new_id()}"
    message = _error(
        raw.post(f"/v1/training_projects/{missing_project}/jobs", content=_job_body()), 404
    )
    assert missing_project in message
    assert missing_project in _error(raw.get(f"/v1/training_projects/{missing_project}"), 404)
    with pytest.raises(NotFound) as caught:
        client.project(missing_project)
    assert caught.value.status == 404

    missing_job = f"no-job-{new_id()}"
    job_path = f"/v1/training_projects/{project.id}/jobs/{missing_job}"
    assert missing_job in _error(raw.get(job_path), 404)
    assert missing_job in _error(raw.post(f"{job_path}/stop", json={}), 404)
    assert missing_job in _error(raw.post(f"{job_path}/recreate"), 404)
    with pytest.raises(NotFound):
        client.job(project.id, missing_job)
    # a job is only found under its own project
    assert job.id in _error(raw.get(f"/v1/training_projects/{other.id}/jobs/{job.id}"), 404)

    assert _counts(client) == before
    wait_terminal(client, job, timeout=60)


def test_wrong_api_key_is_401_and_not_retried(client: ApiClient, local_home: Home) -> None:
    info = _service(local_home)
    before = _counts(client)
    recorder = Recorder()
    with (
        ApiClient(info.url, "not-the-key", transport=recorder) as wrong,
        pytest.raises(AuthError) as caught,
    ):
        wrong.upsert_project(f"t-unauthorized-{new_id()}")  # an upsert may be retried
    assert caught.value.status == 401
    assert caught.value.code
    assert "API key" in caught.value.message
    assert [(e.method, e.status) for e in recorder.exchanges] == [("POST", 401)]
    assert _counts(client) == before


def test_logs_limit_over_1000_is_422(
    client: ApiClient, project: api.TrainingProjectV1, raw: httpx.Client
) -> None:
    job = submit(client, project, ["echo hello"])
    wait_terminal(client, job, timeout=60)
    path = f"/v1/training_projects/{project.id}/jobs/{job.id}/logs"
    for response in (
        raw.get(path, params={"limit": 1001}),
        raw.post(path, json={"limit": 1001}),
    ):
        message = _error(response, 422)
        assert "limit" in message
        assert "1000" in message
    assert raw.get(path, params={"limit": 1000}).status_code == 200


# --------------------------------------------------------------------------- checkpoint file pages

CHECKPOINT_FILE_COUNT = 150


@pytest.fixture(scope="module")
def many_checkpoint_files(client: ApiClient) -> Iterator[api.TrainingJobV1]:
    """A finished job with more checkpoint files than the local page size default (100)."""
    project = client.upsert_project(f"t-checkpoint-pages-{new_id()}")
    job = submit(
        client,
        project,
        [
            'mkdir -p "$BT_CHECKPOINT_DIR/many"',
            f"for i in $(seq {CHECKPOINT_FILE_COUNT}); do "
            'echo $i > "$BT_CHECKPOINT_DIR/many/file-$i.txt"; done',
        ],
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    done = wait_terminal(client, job, timeout=60)
    assert done.status == S.COMPLETED, done.error_message
    yield job
    client.delete_job(project.id, job.id)
    client.delete_project(project.id)


def _files_path(job: api.TrainingJobV1) -> str:
    return f"/v1/training_projects/{job.training_project_id}/jobs/{job.id}/checkpoint_files"


def test_checkpoint_file_pages_cover_every_file_once(
    client: ApiClient, raw: httpx.Client, many_checkpoint_files: api.TrainingJobV1
) -> None:
    job = many_checkpoint_files
    names: list[str] = []
    token: int | None = 0
    while token is not None:
        response = raw.get(_files_path(job), params={"page_size": 40, "page_token": token})
        assert response.status_code == 200, response.text
        page = api.GetTrainingJobCheckpointFilesResponseV1.model_validate(response.json())
        assert page.total_count == CHECKPOINT_FILE_COUNT
        assert len(page.presigned_urls) <= 40
        names += [f.relative_file_name for f in page.presigned_urls]
        token = page.next_page_token
    assert len(names) == len(set(names)) == CHECKPOINT_FILE_COUNT
    everything = client.checkpoint_files(job.training_project_id, job.id)
    assert sorted(f.relative_file_name for f in everything) == sorted(names)


def test_checkpoint_files_page_size_defaults_to_1000_as_in_the_spec(
    raw: httpx.Client, many_checkpoint_files: api.TrainingJobV1
) -> None:
    response = raw.get(_files_path(many_checkpoint_files))
    assert response.status_code == 200, response.text
    page = api.GetTrainingJobCheckpointFilesResponseV1.model_validate(response.json())
    assert len(page.presigned_urls) == CHECKPOINT_FILE_COUNT
    assert page.next_page_token is None


def test_checkpoint_files_page_size_has_no_maximum_as_in_the_spec(
    raw: httpx.Client, many_checkpoint_files: api.TrainingJobV1
) -> None:
    response = raw.get(_files_path(many_checkpoint_files), params={"page_size": 2000})
    assert response.status_code == 200, response.text
    page = api.GetTrainingJobCheckpointFilesResponseV1.model_validate(response.json())
    assert len(page.presigned_urls) == CHECKPOINT_FILE_COUNT


# --------------------------------------------------------------------------- artifact limit


@pytest.fixture(scope="module")
def tiny_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, ApiClient]]:
    """A second service that accepts artifacts of at most 1000 bytes."""
    home = Home(tmp_path_factory.mktemp("bt_tiny_limit"))
    with (
        running_service(home, BT_JUPYTER_MAX_ARTIFACT_BYTES="1000"),
        ApiClient.local(home.root) as tiny,
    ):
        yield home, tiny


def _artifact_files(home: Home) -> list[str]:
    return sorted(p.name for p in home.artifacts.iterdir()) if home.artifacts.is_dir() else []


def test_oversize_bundle_is_413_and_leaves_no_file(tiny_limit: tuple[Home, ApiClient]) -> None:
    home, tiny = tiny_limit
    with pytest.raises(ApiError) as caught:
        tiny.upload_artifact(os.urandom(5000))
    assert caught.value.status == 413
    assert caught.value.code == "TOO_LARGE"
    assert "BT_JUPYTER_MAX_ARTIFACT_BYTES" in caught.value.message
    assert _artifact_files(home) == []

    # streamed without a Content-Length: refused once the limit is passed
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield os.urandom(1000)

    info = _service(home)
    response = httpx.put(
        f"{info.url}/v1/local/artifacts/{'a' * 64}.tar.gz",
        content=chunks(),
        headers={"Authorization": f"Bearer {info.api_key}"},
    )
    assert response.status_code == 413, response.text
    assert _artifact_files(home) == []

    # exactly at the limit is accepted
    artifact, sent = tiny.upload_artifact(os.urandom(1000))
    assert sent == 1000
    assert _artifact_files(home) == [artifact.s3_key]


def test_oversize_message_names_the_size_and_the_limit(tiny_limit: tuple[Home, ApiClient]) -> None:
    _, tiny = tiny_limit
    with pytest.raises(ApiError) as caught:
        tiny.upload_artifact(os.urandom(5000))
    message = caught.value.message
    assert _mentions_bytes(message, 5000), message
    assert _mentions_bytes(message, 1000), message


_UNITS = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def _mentions_bytes(message: str, size: int) -> bool:
    """Does ``message`` state ``size`` bytes (exactly, or within 5% in a larger unit)?"""
    for number, unit in re.findall(r"(\d[\d,_]*(?:\.\d+)?)\s*([A-Za-z]*)", message):
        factor = _UNITS.get(unit.lower())
        if factor is None:
            continue
        value = float(number.replace(",", "").replace("_", "")) * factor
        if abs(value - size) <= 0.05 * size:
            return True
    return False
