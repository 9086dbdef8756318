"""The Jupyter server extension: ``bt-jupyter/`` endpoints on a real jupyter_server, talking
to the real local service, with real jobs (no mocks of our components)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# pytest-jupyter's fixtures for this module only. As a plugin (pytest_plugins) it would be
# registered for the whole session, and its autouse fixtures (an event loop per test, a
# ServerApp cleanup) would run around every other test of the suite too.
from pytest_jupyter.jupyter_server import *  # noqa: F403

from bt_jupyter import __version__, api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.server.backends import BtJupyterServer
from tests.helpers import (
    messages,
    running_service,
    submit,
    wait_for,
    wait_status,
    wait_terminal,
)

JOB_KEYS = {
    "id", "name", "project", "project_id", "status", "status_short", "is_terminal",
    "created_at", "updated_at", "elapsed_s", "node_count", "gpu", "error_message",
    "notice",
}  # fmt: skip
CHECKPOINT_KEYS = {"name", "created_at", "size_bytes", "checkpoint_type", "base_model", "lora_rank"}


@dataclass(frozen=True)
class Reply:
    code: int
    body: Any


Call = Callable[..., Reply]


@pytest.fixture
def jp_server_config(local_home: Home, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The extension enabled, on the tests' local service; more BtJupyterServer settings
    with ``@pytest.mark.parametrize("jp_server_config", [{...}], indirect=True)``."""
    settings = {"local_home": str(local_home.root), **getattr(request, "param", {})}
    return {
        "ServerApp": {"jpserver_extensions": {"bt_jupyter": True}},
        "BtJupyterServer": settings,
    }


@pytest.fixture(autouse=True)
def no_baseten_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never a real key: none in the environment, an empty ~/.trussrc."""
    trussrc = tmp_path / "trussrc"
    trussrc.write_text("")
    monkeypatch.delenv("BASETEN_API_KEY", raising=False)
    monkeypatch.delenv("BT_JUPYTER_BASETEN_URL", raising=False)
    monkeypatch.setenv("USER_TRUSSRC_PATH", str(trussrc))


@pytest.fixture
def call(jp_fetch: Any, jp_asyncio_loop: Any) -> Call:
    """``call("jobs", job_id, "logs", cursor=..., method=..., body=...)`` -> Reply."""

    def call(
        *path: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        request_timeout: float = 60,
        **params: Any,
    ) -> Reply:
        extra = {"body": json.dumps(body if body is not None else {})} if method == "POST" else {}
        fetch = jp_fetch(
            "bt-jupyter",
            *path,
            method=method,
            params={k: str(v) for k, v in params.items()},
            headers=headers,
            raise_error=False,
            request_timeout=request_timeout,
            **extra,
        )
        response = jp_asyncio_loop.run_until_complete(fetch)
        assert response.headers["Content-Type"].startswith("application/json"), response.body
        return Reply(response.code, json.loads(response.body))

    return call


def assert_error(reply: Reply, code: int, *words: str) -> None:
    assert reply.code == code, reply
    assert set(reply.body) >= {"message", "reason"}, reply
    for word in words:
        assert word in reply.body["message"], reply


def follow(
    call: Call, job_id: str, cursor: str = "", **params: Any
) -> tuple[list[dict[str, Any]], str]:
    """Every line from ``cursor`` until ``done`` (each page long-polls)."""
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = call("jobs", job_id, "logs", cursor=cursor, follow=1, timeout=10, **params).body
        lines += page["logs"]
        cursor = page["cursor"]
        if page["done"]:
            return lines, cursor
    raise AssertionError(f"logs of {job_id} not done after 60 s; got {lines}")


def is_ours(line: dict[str, Any]) -> bool:
    """A line the job printed (the service adds its own, e.g. about the image)."""
    return bool(line["message"].startswith("line "))


# --------------------------------------------------------------------------- loading


def test_importing_bt_jupyter_loads_no_server_code() -> None:
    code = (
        "import sys, bt_jupyter\n"
        "assert bt_jupyter._jupyter_server_extension_points() == "
        "[{'module': 'bt_jupyter.server'}]\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tornado', 'jupyter_server')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_installing_enables_the_extension() -> None:
    """The file the wheel puts in etc/jupyter/jupyter_server_config.d."""
    config = Path(__file__).parents[1] / "jupyter-config" / "server-config" / "bt_jupyter.json"
    assert json.loads(config.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"bt_jupyter": True}}
    }


def test_requests_without_a_token_are_refused(call: Call) -> None:
    anonymous = {"Authorization": ""}
    for path in [("config",), ("projects",), ("jobs",), ("jobs", "j1", "logs")]:
        reply = call(*path, headers=anonymous)
        assert reply.code in (401, 403), (path, reply)
    for path in [("jobs", "j1", "stop"), ("jobs", "j1", "deploy")]:
        reply = call(*path, method="POST", headers=anonymous)
        assert reply.code in (401, 403), (path, reply)


def test_config_and_unknown_backend(call: Call) -> None:
    assert call("config").body == {
        "backends": ["local", "baseten"],
        "default_backend": "local",
        "baseten_configured": False,
        "version": __version__,
    }
    for path in [("config",), ("projects",), ("jobs",), ("jobs", "j1", "logs")]:
        assert_error(call(*path, backend="gcp"), 400, "unknown backend 'gcp'")
    assert_error(call("jobs", "j1", "stop", method="POST", backend="gcp"), 400, "backend")


@pytest.mark.parametrize("jp_server_config", [{"default_backend": "baseten"}], indirect=True)
def test_default_backend_is_configurable(call: Call) -> None:
    assert call("config").body["default_backend"] == "baseten"
    assert_error(call("projects"), 401, "BASETEN_API_KEY")
    assert call("projects", backend="local").code == 200


def test_baseten_without_a_key_is_401_saying_how_to_set_one(call: Call) -> None:
    for path in [("projects",), ("jobs",), ("jobs", "j1"), ("jobs", "j1", "logs")]:
        assert_error(call(*path, backend="baseten"), 401, "BASETEN_API_KEY")
    assert_error(call("jobs", "j1", "stop", method="POST", backend="baseten"), 401)


def test_unreachable_service_is_503(call: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BASETEN_API_KEY", "not-a-key")
    monkeypatch.setenv("BT_JUPYTER_BASETEN_URL", f"http://127.0.0.1:{port}")
    assert_error(call("projects", backend="baseten"), 503, "could not reach")


def test_unknown_job_is_404(call: Call) -> None:
    for path in [("jobs", "nope"), ("jobs", "nope", "logs"), ("jobs", "nope", "checkpoints")]:
        assert_error(call(*path), 404, "'nope'")
    for action in ("stop", "deploy"):
        assert_error(call("jobs", "nope", action, method="POST"), 404, "'nope'")


def test_server_stop_closes_the_clients(
    call: Call, jp_serverapp: Any, jp_asyncio_loop: Any
) -> None:
    assert call("projects").code == 200
    state = jp_serverapp.web_app.settings["bt_jupyter"]
    assert isinstance(state, BtJupyterServer)
    jp_asyncio_loop.run_until_complete(jp_serverapp.cleanup_extensions())
    assert state.closed
    assert_error(call("projects"), 503, "shutting down")


# --------------------------------------------------------------------------- a finished job

FINISHED_SCRIPT = """
    import json, os, pathlib
    for i in range(30):
        print(f"line {i}", flush=True)
    ckpt = pathlib.Path(os.environ["BT_CHECKPOINT_DIR"]) / "checkpoint-1"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text(
        json.dumps({"r": 8, "base_model_name_or_path": "tiny-base"})
    )
    (ckpt / "adapter_model.safetensors").write_bytes(b"0" * 1000)
"""


def test_every_endpoint_on_a_finished_job(
    call: Call, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        ["python train.py"],
        files={"train.py": FINISHED_SCRIPT},
        name="finished",
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    assert wait_terminal(client, job).status == spec.TrainingJobStatus.COMPLETED

    projects = call("projects").body["projects"]
    mine = [p for p in projects if p["id"] == project.id]
    assert mine == [
        {
            "id": project.id,
            "name": project.name,
            "created_at": mine[0]["created_at"],
            "updated_at": mine[0]["updated_at"],
        }
    ]

    jobs = call("jobs", project=project.name).body["jobs"]
    assert [j["id"] for j in jobs] == [job.id]
    listed = jobs[0]
    assert set(listed) == JOB_KEYS
    assert listed["name"] == "finished"
    assert listed["project"] == project.name
    assert listed["project_id"] == project.id
    assert listed["status"] == "TRAINING_JOB_COMPLETED"
    assert listed["status_short"] == "COMPLETED"
    assert listed["is_terminal"] is True
    assert listed["node_count"] == 1
    assert listed["gpu"] is None
    assert listed["error_message"] is None
    assert "+00:00" in listed["created_at"]
    assert listed["elapsed_s"] > 0
    # an ended job's elapsed time stays put
    assert call("jobs", project=project.name).body["jobs"][0]["elapsed_s"] == listed["elapsed_s"]

    for status in ("COMPLETED", "TRAINING_JOB_COMPLETED", "completed"):
        found = call("jobs", project=project.name, status=status).body["jobs"]
        assert [j["id"] for j in found] == [job.id]
    assert call("jobs", project=project.name, status="RUNNING").body["jobs"] == []
    assert call("jobs", project="no-such-project").body["jobs"] == []
    assert_error(call("jobs", status="FINISHED"), 400, "unknown job status 'FINISHED'")

    detail = call("jobs", job.id).body
    assert set(detail) == {"job", "history", "checkpoints", "deployments", "cost"}
    assert detail["job"] == listed
    assert [h["status_short"] for h in detail["history"]] == [
        "CREATED", "DEPLOYING", "RUNNING", "COMPLETED"
    ]  # fmt: skip
    assert all(set(h) == {"status", "status_short", "at"} for h in detail["history"])
    assert detail["deployments"] == []
    (checkpoint,) = detail["checkpoints"]
    assert set(checkpoint) == CHECKPOINT_KEYS
    assert checkpoint["name"] == "checkpoint-1"
    assert checkpoint["checkpoint_type"] == "lora"
    assert checkpoint["base_model"] == "tiny-base"
    assert checkpoint["lora_rank"] == 8
    assert checkpoint["size_bytes"] >= 1000
    assert call("jobs", job.id, "checkpoints").body == {"checkpoints": detail["checkpoints"]}

    expected = messages(client, job)
    assert [f"line {i}" for i in range(30)] == [m for m in expected if m.startswith("line ")]
    last5 = call("jobs", job.id, "logs", tail=5).body
    assert [line["message"] for line in last5["logs"]] == expected[-5:]
    assert all(set(line) == {"timestamp", "message", "node"} for line in last5["logs"])
    every, _ = follow(call, job.id, tail=1000)
    assert [line["message"] for line in every] == expected
    assert {line["node"] for line in every if line["message"].startswith("line ")} == {0}
    assert call("jobs", job.id, "logs", node=0, tail=1000).body["logs"] == [
        line for line in every if line["node"] == 0
    ]
    assert call("jobs", job.id, "logs", node=1).body["logs"] == []
    assert all(isinstance(line["timestamp"], int) for line in last5["logs"])
    rest = call("jobs", job.id, "logs", cursor=last5["cursor"]).body
    assert rest == {"logs": [], "cursor": last5["cursor"], "done": True, "earlier": ""}
    back = call("jobs", job.id, "logs", tail=5, before=last5["earlier"]).body
    assert [line["message"] for line in back["logs"]] == expected[-10:-5]
    assert back["cursor"] == ""  # reading back leaves the follow where it was

    assert_error(call("jobs", job.id, "logs", tail=0), 400, "tail")
    assert_error(call("jobs", job.id, "logs", tail="many"), 400, "tail")
    assert_error(call("jobs", job.id, "logs", cursor="Bogus"), 400, "cursor")
    assert_error(call("jobs", job.id, "logs", follow="maybe"), 400, "follow")
    assert_error(call("jobs", job.id, "stop", method="POST"), 409, "COMPLETED")
    unknown = call("jobs", job.id, "deploy", method="POST", body={"checkpoint": "nope"})
    assert_error(unknown, 400, "no checkpoint 'nope'", "checkpoint-1")
    assert_error(call("jobs", job.id, "deploy", method="POST", body={"checkpoint": 3}), 400)

    deployed = call("jobs", job.id, "deploy", method="POST", body={"checkpoint": "latest"})
    assert deployed.code == 202, deployed
    deployment = deployed.body["deployment"]
    try:  # started, not waited for
        assert set(deployment) == {"id", "name", "status", "url", "checkpoint", "kind", "error"}
        assert deployment["checkpoint"] == "checkpoint-1"
        assert deployment["status"] == "DEPLOYING"
        assert deployment["url"].startswith("http://127.0.0.1:")
        listed = call("jobs", job.id).body["deployments"]
        assert [d["id"] for d in listed] == [deployment["id"]]
    finally:
        client.stop_deployment(deployment["id"])


# --------------------------------------------------------------------------- a running job

GATED_SCRIPT = """
    import os, pathlib, time
    for i in range(40):
        print(f"line {i}", flush=True)
    gate = pathlib.Path(os.environ["GATE"])
    while not gate.exists():
        time.sleep(0.02)
    for i in range(40, 80):
        print(f"line {i}", flush=True)
    time.sleep(600)
"""


def test_follow_a_running_job_then_stop_it(
    call: Call, client: ApiClient, project: api.TrainingProjectV1, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = submit(
        client,
        project,
        ["python train.py"],
        files={"train.py": GATED_SCRIPT},
        runtime=spec.Runtime(environment_variables={"GATE": str(gate)}),
    )
    try:
        wait_status(client, job, spec.TrainingJobStatus.RUNNING)
        running = call("jobs", project=project.name, status="RUNNING").body["jobs"]
        assert [j["id"] for j in running] == [job.id]
        assert running[0]["is_terminal"] is False

        # follow from the start until the job waits at its gate
        lines: list[str] = []
        cursor = ""
        while len(lines) < 40:
            page = call("jobs", job.id, "logs", cursor=cursor, follow=1, timeout=10).body
            assert page["logs"], "a long-poll came back empty before its timeout"
            assert page["done"] is False
            lines += [line["message"] for line in page["logs"] if is_ours(line)]
            cursor = page["cursor"]
        assert lines == [f"line {i}" for i in range(40)]

        # nothing new: the long-poll waits out its timeout, same cursor
        started = time.monotonic()
        idle = call("jobs", job.id, "logs", cursor=cursor, follow=1, timeout=1).body
        assert idle == {"logs": [], "cursor": cursor, "done": False, "earlier": ""}
        assert time.monotonic() - started >= 0.9

        assert_error(call("jobs", job.id, "deploy", method="POST"), 400, "no checkpoints")

        gate.touch()
        while len(lines) < 80:
            page = call("jobs", job.id, "logs", cursor=cursor, follow=1, timeout=10).body
            assert page["logs"], "a long-poll came back empty before its timeout"
            lines += [line["message"] for line in page["logs"] if is_ours(line)]
            cursor = page["cursor"]
        assert lines == [f"line {i}" for i in range(80)]

        stopped = call("jobs", job.id, "stop", method="POST")
        assert stopped.code == 200, stopped
        assert set(stopped.body["job"]) == JOB_KEYS

        def is_stopped() -> bool:
            return bool(call("jobs", job.id).body["job"]["status_short"] == "STOPPED")

        wait_for(is_stopped, 30, "the job to be STOPPED", every=0.1)
        rest, _ = follow(call, job.id, cursor)
        assert not any(is_ours(line) for line in rest)  # nothing twice
        assert_error(call("jobs", job.id, "stop", method="POST"), 409, "STOPPED")
    finally:  # a failed test leaves no job running
        if not client.job(project.id, job.id).training_job.status.is_terminal:
            client.stop_job(project.id, job.id)


# --------------------------------------------------------------------------- cloud-style logs

STEADY_SCRIPT = """
    import time
    for i in range(30):
        print(f"line {i}", flush=True)
        time.sleep(0.03)
"""


def test_baseten_backend_reads_logs_by_time_windows(
    call: Call,
    client: ApiClient,
    project: api.TrainingProjectV1,
    local_home: Home,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The local service stands in for Baseten's API (same paths and JSON): the baseten
    backend has no follow cursor, so pages come from time windows, deduplicated."""
    info = daemon.status(local_home)
    assert info is not None
    monkeypatch.setenv("BASETEN_API_KEY", info.api_key)
    monkeypatch.setenv("BT_JUPYTER_BASETEN_URL", info.url)
    assert call("config").body["baseten_configured"] is True

    job = submit(client, project, ["python steady.py"], files={"steady.py": STEADY_SCRIPT})
    lines, _ = follow(call, job.id, backend="baseten")
    expected = messages(client, job)
    assert [f"line {i}" for i in range(30)] == [m for m in expected if m.startswith("line ")]
    assert [line["message"] for line in lines] == expected

    last3 = call("jobs", job.id, "logs", backend="baseten", tail=3).body
    assert [line["message"] for line in last3["logs"]] == expected[-3:]
    assert last3["cursor"].startswith("B")
    rest = call("jobs", job.id, "logs", backend="baseten", cursor=last3["cursor"]).body
    assert rest["logs"] == []
    assert_error(call("jobs", job.id, "logs", backend="baseten", cursor="L3"), 400, "cursor")

    detail = call("jobs", job.id, backend="baseten").body
    assert detail["job"]["status_short"] == "COMPLETED"
    assert detail["deployments"] == []
    assert [h["status_short"] for h in detail["history"]] == ["COMPLETED"]


def test_baseten_backend_sends_late_lines_once(
    call: Call, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the stand-in in baseten mode, where every third line reaches the log API
    1.5 s late (behind newer ones): the panel's follow still gets each line once."""
    home = Home(tmp_path / "baseten_mode")
    with running_service(home, BT_JUPYTER_SERVICE_MODE="baseten") as info:
        monkeypatch.setenv("BASETEN_API_KEY", info.api_key)
        monkeypatch.setenv("BT_JUPYTER_BASETEN_URL", info.url)
        with ApiClient(info.url, info.api_key) as cloud:
            project = cloud.upsert_project(f"late-{new_id()}")
            job = submit(cloud, project, ["python steady.py"], files={"steady.py": STEADY_SCRIPT})
            lines, _ = follow(call, job.id, backend="baseten")
            stored = [m for m in messages(cloud, job) if m.startswith("line ")]
    in_order = [f"line {i}" for i in range(30)]
    got = [line["message"] for line in lines if is_ours(line)]
    assert sorted(got) == sorted(stored) == sorted(in_order)  # each line once, none lost
    assert got != in_order, "no line came late: the stand-in checked nothing"


METRICS_SCRIPT = """
    import json, sys, time
    for step in range(3):
        record = {"step": step, "time": time.time(), "loss": float(sys.argv[1]) / (step + 1)}
        print("[bt-metric] " + json.dumps(record), flush=True)
"""


def test_compare_answers_the_view_of_several_jobs_and_refuses_bad_lists(
    call: Call, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    jobs = [
        submit(client, project, [f"python train.py {v}"], files={"train.py": METRICS_SCRIPT})
        for v in ("1.0", "3.0")
    ]
    for job in jobs:
        assert wait_terminal(client, job).status == spec.TrainingJobStatus.COMPLETED
    body = call("compare", jobs=",".join(j.id for j in jobs)).body
    assert body["done"] is True
    assert body["metric"] == "loss"
    assert [r["id"] for r in body["runs"]] == [j.id for j in jobs]
    assert [r["final"] for r in body["runs"]] == ["0.3333", "1"]
    assert {r["series"] for r in body["series"]} == {j.id for j in jobs}  # unnamed: their ids
    assert len(body["series"]) == 6
    assert any(row["name"] == "final loss" and row["differs"] for row in body["table"])
    assert_error(call("compare", jobs=""), 400, '"jobs" must name at least one job id')
    assert_error(call("compare", jobs=",".join(f"j{i}" for i in range(21))), 400, "at most 20")
    assert_error(call("compare", jobs=f"{jobs[0].id},nope"), 404, "nope")
