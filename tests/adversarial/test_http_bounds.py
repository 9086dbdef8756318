"""Issue 14: bounds at the boundary, over raw HTTP. Every out-of-bounds value of the API is
refused with one clear line (never a 500, never a 5 MB echo) and changes nothing; an
Idempotency-Key means one request; stored rows with absurd values still list; and an
unexpected exception is a JSON 500 with a request id that leaves the connection usable.

The service here runs with ``BT_JUPYTER_LOCAL_NO_RUN=1``: nothing these tests create is
ever launched, so the home's rows change only by what the requests do.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bt_jupyter import limits
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.adversarial.checks import assert_refused, unchanged
from tests.helpers import running_service
from tests.openapi import OpenAPI

JOB = {
    "image": {"base_image": "python:3.11-slim"},
    "compute": {"node_count": 1, "cpu_count": 1, "memory": "2Gi"},
    "runtime": {"start_commands": ["true"]},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A service of its own that launches no job (nothing runs, so nothing changes but
    what a request does)."""
    home = Home(tmp_path_factory.mktemp("bounds_home"))
    with running_service(home, BT_JUPYTER_LOCAL_NO_RUN="1"):
        yield home


@pytest.fixture(scope="module")
def http(home: Home) -> Iterator[httpx.Client]:
    info = daemon.status(home)
    assert info is not None
    headers = {"Authorization": f"Bearer {info.api_key}"}
    with httpx.Client(base_url=info.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def ids(http: httpx.Client) -> dict[str, str]:
    """A project with one (never launched) job: the targets of the bad requests."""
    project = http.post("/v1/training_projects", json={"training_project": {"name": "bounds"}})
    project_id = project.json()["training_project"]["id"]
    job = http.post(f"/v1/training_projects/{project_id}/jobs", json={"training_job": JOB})
    assert job.status_code == 200, job.text
    return {"project": project_id, "job": job.json()["training_job"]["id"]}


def _job(**changes: Any) -> dict[str, Any]:
    """The valid job with some parts replaced (``compute={...}`` merges into compute)."""
    body = json.loads(json.dumps(JOB))
    for part, value in changes.items():
        if isinstance(value, dict) and isinstance(body.get(part), dict):
            body[part].update(value)
        else:
            body[part] = value
    return {"training_job": body}


def _env(env: dict[str, Any]) -> dict[str, Any]:
    return _job(runtime={"start_commands": ["true"], "environment_variables": env})


def _load(*refs: dict[str, Any]) -> dict[str, Any]:
    config = {"enabled": True, "checkpoints": list(refs)}
    return _job(runtime={"start_commands": ["true"], "load_checkpoint_config": config})


# --------------------------------------------------------------------------- create job

FIVE_MB = "y" * (5 * 1024 * 1024)

CREATE_JOB: list[Any] = [
    pytest.param(_job(compute={"node_count": 2**63}), "node_count", id="nodes-2**63"),
    pytest.param(_job(compute={"node_count": 10**20}), "node_count", id="nodes-10**20"),
    pytest.param(_job(compute={"node_count": 0}), "node_count", id="nodes-0"),
    pytest.param(_job(compute={"node_count": 65}), "node_count", id="nodes-65"),
    pytest.param(_job(compute={"node_count": 10**4000}), "node_count", id="nodes-4000-digits"),
    pytest.param(_job(compute={"cpu_count": 0}), "cpu_count", id="cpu-0"),
    pytest.param(_job(compute={"cpu_count": 10**6}), "cpu_count", id="cpu-10**6"),
    pytest.param(
        _job(compute={"accelerator": "H100:99999999999999999999"}), "GPU count", id="gpu-20-digits"
    ),
    pytest.param(
        _job(compute={"accelerator": {"accelerator": "H100", "count": -1}}),
        "GPU count",
        id="gpu-count-negative",
    ),
    pytest.param(_job(compute={"accelerator": "H100:9"}), "GPU count", id="gpu-9-per-node"),
    pytest.param(_job(compute={"memory": "1" + "0" * 400 + "Gi"}), "memory", id="memory-absurd"),
    pytest.param(_job(priority=2**70), "priority", id="priority-2**70"),
    pytest.param(_job(priority=-(2**40)), "priority", id="priority-minus-2**40"),
    pytest.param(_job(name="n" * 300), "job name", id="job-name-300-chars"),
    pytest.param(_job(name="a\x00b"), "control character", id="job-name-nul"),
    pytest.param(_job(name="a\nb"), "control character", id="job-name-newline"),
    pytest.param(_job(name="\x1b[31mred"), "control character", id="job-name-escape"),
    pytest.param(_env({"TOKEN": "a\x00b"}), "NUL", id="env-value-nul"),
    pytest.param(_env({"V" * 300: "x"}), "environment variable name", id="env-name-300-chars"),
    pytest.param(_env({"A": "x" * (70 * 1024)}), "value of A", id="env-value-70kib"),
    pytest.param(
        _env({f"V{i}": "x" for i in range(limits.MAX_ENV_VARS + 1)}),
        "environment variables",
        id="env-513-vars",
    ),
    pytest.param(_env({"S": {"name": "../x"}}), "secret name", id="secret-name-path"),
    pytest.param(_env({"S": {"name": "a\x00"}}), "secret name", id="secret-name-nul"),
    pytest.param(_job(runtime={"start_commands": ["ls\x00"]}), "NUL", id="command-nul"),
    pytest.param(
        _job(runtime={"start_commands": ["true"] * (limits.MAX_COMMANDS + 1)}),
        "start_commands",
        id="commands-257",
    ),
    pytest.param(
        _job(runtime={"start_commands": ["x" * (65 * 1024)]}),
        "start_commands[0]",
        id="command-65kib",
    ),
    pytest.param(
        _job(runtime={"checkpointing_config": {"enabled": True, "volume_size_gib": 2**40}}),
        "volume_size_gib",
        id="volume-2**40",
    ),
    pytest.param(
        _job(interactive_session={"timeout_minutes": 10**9}),
        "timeout_minutes",
        id="session-timeout-10**9",
    ),
    pytest.param(
        _load({"typ": "baseten_named_checkpoint", "checkpoint_name": "../../etc", "job_id": "j"}),
        "checkpoint name",
        id="checkpoint-name-escape",
    ),
    pytest.param(
        _load({"typ": "baseten_named_checkpoint", "checkpoint_name": "c", "job_id": "a\x00"}),
        "job id",
        id="checkpoint-job-nul",
    ),
    pytest.param(
        _load(*[{"typ": "baseten_latest_checkpoint", "job_id": "j"}] * 65),
        "checkpoints",
        id="checkpoints-65",
    ),
    pytest.param(
        _job(weights=[{"source": "hf://m", "mount_location": "/m"}] * 257),
        "weights",
        id="weights-257",
    ),
    pytest.param(
        _job(
            runtime={
                "start_commands": ["true"],
                "artifacts": [{"s3_bucket": "b", "s3_key": "k"}] * 257,
            }
        ),
        "artifacts",
        id="artifacts-257",
    ),
    pytest.param(_job(image={"base_image": FIVE_MB}), "base_image", id="image-5mb-not-echoed"),
]


@pytest.mark.parametrize(("body", "mention"), CREATE_JOB)
def test_create_job_refuses_out_of_bounds_values(
    http: httpx.Client, home: Home, ids: dict[str, str], body: dict[str, Any], mention: str
) -> None:
    with unchanged(home):
        answer = http.post(f"/v1/training_projects/{ids['project']}/jobs", json=body)
        assert_refused(answer, mention, status=422)


# --------------------------------------------------------------------------- projects

UPSERT: list[Any] = [
    pytest.param({"name": "p" * 300}, "project name", id="name-300-chars"),
    pytest.param({"name": "p" * (1024 * 1024)}, "name", id="name-1mb"),
    pytest.param({"name": "a\x00b"}, "control character", id="name-nul"),
    pytest.param({"name": "\x1b[2Jcleared"}, "control character", id="name-escape"),
    pytest.param({"name": "a\u202eb"}, "control character", id="name-bidi-override"),
    pytest.param({"name": "   "}, "cannot be empty", id="name-blank"),
    pytest.param({"name": "p", "team_name": "../../../../tmp/x"}, "team name", id="team-escape"),
    pytest.param({"name": "p", "team_name": "a/b"}, "team name", id="team-slash"),
    pytest.param({"name": "p", "team_name": ".."}, "team name", id="team-dotdot"),
    pytest.param({"name": "p", "team_name": "a\\b"}, "team name", id="team-backslash"),
    pytest.param({"name": "p", "team_name": "t\x00"}, "team name", id="team-nul"),
]


@pytest.mark.parametrize(("project", "mention"), UPSERT)
def test_upsert_project_refuses_bad_names(
    http: httpx.Client, home: Home, project: dict[str, Any], mention: str
) -> None:
    with unchanged(home):
        answer = http.post("/v1/training_projects", json={"training_project": project})
        assert_refused(answer, mention, status=422)


@pytest.mark.parametrize(
    "team",
    [
        pytest.param("a%5Cb", id="backslash"),
        pytest.param("t%00", id="nul"),
        pytest.param("%2E%2E", id="dotdot"),
        pytest.param("t" * 300, id="300-chars"),
    ],
)
def test_upsert_in_a_team_refuses_a_team_id_that_is_a_path(
    http: httpx.Client, home: Home, team: str
) -> None:
    with unchanged(home):
        answer = http.post(
            f"/v1/teams/{team}/training_projects", json={"training_project": {"name": "p"}}
        )
        assert_refused(answer, "team")


@pytest.mark.parametrize(
    ("raw", "mention", "status"),
    [
        pytest.param(b'{"training_project": {"name": "\\ud800"}}', "surrogate", 400, id="lone"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested", 400, id="nested-100k"),
        pytest.param(b"{not json", "not valid JSON", 400, id="not-json"),
        pytest.param(b'{"training_project": {"name": "\xff\xfe"}}', "UTF-8", 400, id="not-utf8"),
        pytest.param(b"[]", "TrainingProject", 422, id="a-list"),
        pytest.param(b'{"training_project": {"name": 1e400}}', "name", 422, id="infinity"),
    ],
)
def test_malformed_bodies_are_refused(
    http: httpx.Client, home: Home, raw: bytes, mention: str, status: int
) -> None:
    with unchanged(home):
        answer = http.post(
            "/v1/training_projects", content=raw, headers={"content-type": "application/json"}
        )
        assert_refused(answer, mention, status=status)


# --------------------------------------------------------------------------- update, search


@pytest.mark.parametrize(
    ("raw", "mention"),
    [
        pytest.param(b'{"priority": 1180591620717411303424}', "priority", id="2**70"),
        pytest.param(b'{"priority": -1180591620717411303424}', "priority", id="minus-2**70"),
        pytest.param(b'{"priority": "high"}', "priority", id="a-word"),
        pytest.param(b'{"priority": 1e400}', "priority", id="infinity"),
        pytest.param(b'{"priority": 2147483648}', "2147483647", id="2**31"),
    ],
)
def test_patch_priority_refuses_out_of_bounds(
    http: httpx.Client, home: Home, ids: dict[str, str], raw: bytes, mention: str
) -> None:
    with unchanged(home):
        answer = http.patch(
            f"/v1/training_projects/{ids['project']}/jobs/{ids['job']}",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert_refused(answer, mention, status=422)


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        pytest.param({"statuses": ["BOGUS"]}, "unknown job status", id="status-bogus"),
        pytest.param({"statuses": [""]}, "unknown job status", id="status-empty"),
        pytest.param({"statuses": ["RUNNING"] * 100}, "statuses", id="statuses-100"),
        pytest.param({"statuses": ["X" * 100_000]}, "statuses[0]", id="status-100k"),
        pytest.param(
            {"order_by": [{"field": "id; DROP TABLE jobs", "order": "asc"}]},
            "cannot order by",
            id="order-field-sql",
        ),
        pytest.param(
            {"order_by": [{"field": "created_at", "order": "sideways"}]},
            "order",
            id="order-sideways",
        ),
        pytest.param({"project_id": "p" * (1024 * 1024)}, "project_id", id="project-id-1mb"),
    ],
)
def test_search_refuses_bad_filters(
    http: httpx.Client, home: Home, body: dict[str, Any], mention: str
) -> None:
    with unchanged(home):
        assert_refused(http.post("/v1/training_jobs/search", json=body), mention, status=422)


# --------------------------------------------------------------------------- queries

QUERIES: list[Any] = [
    pytest.param("logs", {"start_epoch_millis": str(2**80)}, "start_epoch_millis", id="logs-2**80"),
    pytest.param("logs", {"end_epoch_millis": "-1"}, "end_epoch_millis", id="logs-end-negative"),
    pytest.param("logs", {"limit": "0"}, "limit", id="logs-limit-0"),
    pytest.param("logs", {"limit": str(10**30)}, "limit", id="logs-limit-10**30"),
    pytest.param("logs", {"start_epoch_millis": "abc"}, "start_epoch_millis", id="logs-word"),
    pytest.param("logs", {"direction": "x" * 5000}, "direction", id="logs-direction-5k"),
    pytest.param("metrics", {"step_seconds": "0"}, "step_seconds", id="metrics-step-0"),
    pytest.param(
        "metrics", {"start_epoch_millis": str(2**80)}, "start_epoch_millis", id="metrics-2**80"
    ),
    pytest.param("checkpoint_files", {"page_size": str(10**30)}, "page_size", id="page-10**30"),
    pytest.param("checkpoint_files", {"page_token": "-1"}, "page_token", id="token-negative"),
    pytest.param("checkpoint_files", {"page_size": "1" * 5000}, "page_size", id="page-5k-digits"),
]


@pytest.mark.parametrize(("what", "query", "mention"), QUERIES)
def test_query_parameters_out_of_bounds_are_refused(
    http: httpx.Client,
    home: Home,
    ids: dict[str, str],
    what: str,
    query: dict[str, str],
    mention: str,
) -> None:
    with unchanged(home):
        path = f"/v1/training_projects/{ids['project']}/jobs/{ids['job']}/{what}"
        assert_refused(http.get(path, params=query), mention, status=422)


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        pytest.param({"start_epoch_millis": 2**80}, "start_epoch_millis", id="start-2**80"),
        pytest.param({"end_epoch_millis": 2**63}, "end_epoch_millis", id="end-2**63"),
        pytest.param({"limit": 1001}, "limit", id="limit-1001"),
    ],
)
def test_posted_log_queries_out_of_bounds_are_refused(
    http: httpx.Client, home: Home, ids: dict[str, str], body: dict[str, Any], mention: str
) -> None:
    with unchanged(home):
        path = f"/v1/training_projects/{ids['project']}/jobs/{ids['job']}/logs"
        assert_refused(http.post(path, json=body), mention, status=422)


@pytest.mark.parametrize(
    ("query", "mention"),
    [
        pytest.param({"cursor": str(10**30)}, "cursor", id="cursor-10**30"),
        pytest.param({"tail": "-1"}, "tail", id="tail-negative"),
        pytest.param({"keep_containing": "k" * 1000}, "keep_containing", id="keep-prefix-1000"),
        pytest.param({"timeout": "99999"}, "timeout", id="timeout-99999"),
    ],
)
def test_follow_refuses_out_of_bounds(
    http: httpx.Client, home: Home, ids: dict[str, str], query: dict[str, str], mention: str
) -> None:
    with unchanged(home):
        path = f"/v1/local/training_projects/{ids['project']}/jobs/{ids['job']}/logs/follow"
        assert_refused(http.get(path, params=query), mention, status=422)


def test_a_very_long_id_is_not_echoed(http: httpx.Client, home: Home) -> None:
    with unchanged(home):
        assert_refused(
            http.get(f"/v1/training_projects/{'p' * 8000}"), "training project", status=404
        )


# --------------------------------------------------------------------------- idempotency


def test_an_idempotency_key_reused_with_another_body_is_refused(
    http: httpx.Client, home: Home, ids: dict[str, str]
) -> None:
    path = f"/v1/training_projects/{ids['project']}/jobs"
    key = {"Idempotency-Key": f"key-{new_id()}"}
    first = http.post(path, json=_job(name="first"), headers=key)
    assert first.status_code == 200, first.text
    job_id = first.json()["training_job"]["id"]
    with unchanged(home):
        again = http.post(path, json=_job(name="second"), headers=key)
        assert_refused(again, "Idempotency-Key", job_id, status=422)
        # the same request again (its keys in another order) is the same job
        same = {"training_job": dict(reversed(_job(name="first")["training_job"].items()))}
        repeated = http.post(path, json=same, headers=key)
        assert repeated.status_code == 200, repeated.text
        assert repeated.json()["training_job"]["id"] == job_id


def test_an_idempotency_key_is_bounded(http: httpx.Client, home: Home, ids: dict[str, str]) -> None:
    with unchanged(home):
        answer = http.post(
            f"/v1/training_projects/{ids['project']}/jobs",
            json=_job(),
            headers={"Idempotency-Key": "k" * 1000},
        )
        assert_refused(answer, "Idempotency-Key", status=422)


# --------------------------------------------------------------------------- tolerant reads

ABSURD_ROWS: list[Any] = [
    pytest.param("spec", "not json {", id="spec-not-json"),
    pytest.param("spec", "[1, 2]", id="spec-a-list"),
    pytest.param(
        "spec",
        json.dumps({"compute": {"cpu_count": "many", "memory": "1" + "0" * 400 + "Gi"}}),
        id="compute-absurd",
    ),
    pytest.param(
        "spec",
        '{"compute": {"accelerator": {"accelerator": "H100", "count": 1' + "0" * 40 + "}}}",
        id="gpu-count-40-digits",
    ),
    pytest.param("spec", json.dumps({"compute": {"availability_model": "??"}}), id="availability"),
    pytest.param("node_count", 2**63 - 1, id="node-count-int64-max"),
    pytest.param("node_count", 0, id="node-count-0"),
    pytest.param("priority", "high", id="priority-text"),
    pytest.param("status", "", id="status-empty"),
    pytest.param("created_at", 1e300, id="created-1e300"),
    pytest.param("updated_at", -1e300, id="updated-minus-1e300"),
    pytest.param("name", b"\xff\xfe", id="name-bytes"),
]


@pytest.mark.parametrize(("column", "value"), ABSURD_ROWS)
def test_a_stored_absurd_value_breaks_no_listing(
    http: httpx.Client,
    home: Home,
    openapi_spec: dict[str, Any],
    column: str,
    value: Any,
) -> None:
    """A row an older service (or a person) stored: every read still answers, per spec."""
    upsert = http.post("/v1/training_projects", json={"training_project": {"name": new_id()}})
    project_id = upsert.json()["training_project"]["id"]
    created = http.post(f"/v1/training_projects/{project_id}/jobs", json=_job())
    job_id = created.json()["training_job"]["id"]
    with sqlite3.connect(home.db) as db:
        db.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, job_id))
    openapi = OpenAPI(openapi_spec)
    reads = [
        ("GET", "/v1/training_projects", None, "ListTrainingProjectsResponseV1"),
        ("GET", f"/v1/training_projects/{project_id}", None, "GetTrainingProjectResponseV1"),
        ("GET", f"/v1/training_projects/{project_id}/jobs", None, "ListTrainingJobsResponseV1"),
        (
            "GET",
            f"/v1/training_projects/{project_id}/jobs/{job_id}",
            None,
            "GetTrainingJobResponseV1",
        ),
        ("POST", "/v1/training_jobs/search", {}, "SearchTrainingJobsResponseV1"),
    ]
    for method, path, body, schema in reads:
        answer = http.request(method, path, json=body)
        assert answer.status_code == 200, f"{method} {path}: {answer.text[:300]}"
        openapi.validate(schema, answer.json())


# --------------------------------------------------------------------------- never a 500


def test_an_unexpected_error_is_json_with_a_request_id_and_the_connection_lives(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A fault no route expects (here: a table gone under the service) answers JSON 500
    with a request id that is in the service log, and the same keep-alive connection then
    answers the next request (it used to be reset)."""
    broken = Home(tmp_path_factory.mktemp("broken_home"))
    with running_service(broken) as info:
        with sqlite3.connect(broken.db) as db:
            db.execute("DROP TABLE deployments")
        headers = {"Authorization": f"Bearer {info.api_key}"}
        with httpx.Client(base_url=info.url, headers=headers, timeout=30) as client:
            bad = client.get("/v1/local/deployments")
            assert bad.status_code == 500, bad.text
            body = bad.json()
            assert body["code"] == "INTERNAL"
            request_id = body["request_id"]
            assert request_id in body["message"]
            assert bad.headers["x-request-id"] == request_id
            assert "deployments" not in body["message"]  # no internals (or input) echoed
            first_port = _local_port(bad)
            good = client.get("/v1/training_projects")
            assert good.status_code == 200, good.text
            assert _local_port(good) == first_port, "the connection was dropped after the 500"
        log = broken.service_log.read_text()
        assert f"request id {request_id}" in log
        assert "Traceback" in log


def _local_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    port: int = stream.get_extra_info("client_addr")[1]
    return port
