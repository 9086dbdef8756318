"""Interactive sessions (``%%bt_train --interactive``, ``%bt_session``, the widget's
session table) against the Baseten stand-in, which opens them as Baseten does (per node,
with a device code, when the trigger fires) in Baseten's shapes; the plain local service
opens none and says so."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.jobs import Client, Job
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.widgets.job import JobWidget
from tests.adversarial.checks import assert_one_clear_line, unchanged
from tests.conftest import magics_on
from tests.helpers import running_service, submit, wait_for, wait_status, wait_terminal
from tests.openapi import OpenAPI
from tests.test_local_contract import Recorder, _contract_problems

S = spec.TrainingJobStatus
T = spec.InteractiveSessionTrigger
GATED = ['while [ ! -e "$GATE" ]; do sleep 0.05; done']


@dataclass(frozen=True)
class StandIn:
    home: Home
    info: daemon.ServiceInfo
    client: ApiClient
    recorder: Recorder


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    """The Baseten stand-in (no queue wait, no sync delay), every exchange recorded."""
    home = Home(tmp_path_factory.mktemp("bt_sessions"))
    settings = {
        "BT_JUPYTER_SERVICE_MODE": "baseten",
        "BT_JUPYTER_SERVICE_QUEUE_S": "0",
        "BT_JUPYTER_SERVICE_CHECKPOINT_SYNC_S": "0",
        "BT_JUPYTER_SERVICE_LOG_LATE_S": "0",
    }
    recorder = Recorder()
    with (
        running_service(home, **settings) as info,
        ApiClient(info.url, info.api_key, transport=recorder) as client,
    ):
        yield StandIn(home, info, client, recorder)


def _job(client: ApiClient, gate: Path, **session: Any) -> Job:
    project = client.upsert_project(f"sessions-{new_id()}")
    wire = submit(
        client,
        project,
        GATED,
        compute=spec.Compute(node_count=2),
        runtime=spec.Runtime(environment_variables={"GATE": str(gate)}),
        interactive_session=spec.InteractiveSession(**session),
    )
    return Job(Client(client, "baseten", project.name), wire)


@pytest.mark.timeout(120)
def test_on_startup_sessions_open_per_node_and_extend(
    stand_in: StandIn, tmp_path: Path, openapi_spec: dict[str, Any]
) -> None:
    gate = tmp_path / "gate"
    job = _job(stand_in.client, gate, trigger=T.ON_STARTUP, timeout_minutes=90)
    try:
        wait_status(stand_in.client, job.wire, S.RUNNING)
        codes = job.sessions()
        assert [c.replica_id for c in codes] == ["g00r0", "g00r1"]
        assert all(re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", c.auth_code) for c in codes)
        assert {c.auth_url for c in codes} == {"https://microsoft.com/devicelogin"}
        assert {c.working_directory for c in codes} == {"/b10/workspace"}
        expires = datetime.fromisoformat(codes[0].expires_at or "")
        generated = datetime.fromisoformat(codes[0].generated_at or "")
        assert expires - generated == timedelta(minutes=90)

        with magics_on(stand_in.home, job.project) as shell:
            with capture_output() as out:
                shell.run_line_magic("bt_session", job.id)
            assert f"g00r1  {codes[1].auth_code}  https://microsoft.com/devicelogin" in out.stdout
            assert "expires in 1h29m" in out.stdout or "expires in 1h30m" in out.stdout
            with capture_output() as out:
                shell.run_line_magic("bt_session", f"update {job.id} --timeout 30")
            assert out.stdout.count("expiry extended by 0:30:00") == 2
            with unchanged(stand_in.home), pytest.raises(UsageError) as refused:
                shell.run_line_magic("bt_session", f"update {job.id} --trigger on_demand")
            assert_one_clear_line(str(refused.value), "on_startup", "timeout")
        later = datetime.fromisoformat(job.sessions()[0].expires_at or "")
        assert later - expires == timedelta(minutes=30)

        # the widget shows them (its text fallback too)
        widget = JobWidget(job)
        try:
            wait_for(lambda: len(widget.sessions) == 2, 30, "the widget's sessions")
            assert widget.sessions[0]["auth_code"] == codes[0].auth_code
            assert widget.sessions[0]["expires_in"]
            assert f"[session] g00r0  {codes[0].auth_code}" in repr(widget)
        finally:
            assert widget.watcher is not None
            widget.watcher.close()
            widget.close()
    finally:
        gate.touch()
    wait_terminal(stand_in.client, job.wire)
    openapi = OpenAPI(openapi_spec)
    problems = [
        p
        for e in stand_in.recorder.exchanges
        if "session" in e.path or e.path.endswith("/auth_codes")
        for p in _contract_problems(openapi, e)
        if e.status == 200
    ]
    assert problems == []


@pytest.mark.timeout(120)
def test_on_failure_sessions_open_when_it_fails_and_their_trigger_can_change(
    stand_in: StandIn,
) -> None:
    project = stand_in.client.upsert_project(f"sessions-fail-{new_id()}")
    wire = submit(
        stand_in.client,
        project,
        ["exit 3"],
        interactive_session=spec.InteractiveSession(trigger=T.ON_FAILURE),
    )
    job = Job(Client(stand_in.client, "baseten", project.name), wire)
    assert wait_terminal(stand_in.client, wire).status == S.FAILED
    (code,) = job.sessions()
    said = job.update_sessions(trigger=T.ON_DEMAND, timeout_minutes=-1)
    assert said == ["trigger on_failure -> on_demand; timeout now 5256480 minutes"]
    extended = datetime.fromisoformat(job.sessions()[0].expires_at or "")
    assert extended - datetime.fromisoformat(code.expires_at or "") == timedelta(days=3650)


def test_on_demand_opens_nothing_and_updating_says_so(stand_in: StandIn, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = _job(stand_in.client, gate, trigger=T.ON_DEMAND)
    try:
        wait_status(stand_in.client, job.wire, S.RUNNING)
        assert job.sessions() == []
        with magics_on(stand_in.home, job.project) as shell:
            with pytest.raises(UsageError) as refused:
                shell.run_line_magic("bt_session", f"update {job.id} --timeout 10")
            assert_one_clear_line(str(refused.value), "no open interactive session")
            with pytest.raises(UsageError) as nothing:
                shell.run_line_magic("bt_session", f"update {job.id}")
            assert "--trigger or --timeout" in str(nothing.value)
    finally:
        gate.touch()
    wait_terminal(stand_in.client, job.wire)


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"timeout_minutes": 0}, ("timeout_minutes", ">= 1")),
        ({"timeout_minutes": 10**9}, ("timeout_minutes",)),
        ({"trigger": "sometimes"}, ("trigger",)),
        ({"trigger": "on_demand", "extra": 1}, ("extra",)),
    ],
)
def test_a_bad_session_patch_is_one_line_and_changes_nothing(
    stand_in: StandIn, body: dict[str, Any], mentions: tuple[str, ...]
) -> None:
    project = stand_in.client.upsert_project(f"sessions-bad-{new_id()}")
    wire = submit(stand_in.client, project, ["true"])
    wait_terminal(stand_in.client, wire)
    url = f"{stand_in.info.url}/v1/training_projects/{project.id}/jobs/{wire.id}"
    headers = {"Authorization": f"Bearer {stand_in.info.api_key}"}
    with unchanged(stand_in.home):
        response = httpx.patch(f"{url}/interactive_sessions/nosuch", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert_one_clear_line(response.json()["message"], *mentions)
    missing = httpx.patch(f"{url}/interactive_sessions/nosuch", json={}, headers=headers)
    assert missing.status_code == 404
    assert "nosuch" in missing.json()["message"]


def test_the_plain_local_service_opens_no_sessions(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    wire = submit(
        client,
        project,
        ["true"],
        interactive_session=spec.InteractiveSession(trigger=T.ON_STARTUP),
    )
    wait_terminal(client, wire)
    assert client.auth_codes(project.id, wire.id) == []


def test_bt_train_interactive_options_fill_the_job(local_home: Home) -> None:
    with magics_on(local_home, f"sessions-magic-{new_id()}") as shell:
        with capture_output() as out:
            shell.run_cell_magic(
                "bt_train",
                "--interactive on_failure --interactive-timeout 90 --dry-run",
                "x = 1\n",
            )
        shown, _ = json.JSONDecoder().raw_decode(out.stdout)
        session = shown["training_job"]["interactive_session"]
        assert (session["trigger"], session["timeout_minutes"]) == ("on_failure", 90)
        for bad, mentions in (
            ("--interactive sometimes", ("--interactive", "on_startup")),
            ("--interactive-timeout 0", ("--interactive-timeout", ">= 1")),
        ):
            with pytest.raises(UsageError) as refused:
                shell.run_cell_magic("bt_train", f"{bad} --dry-run", "x = 1\n")
            assert_one_clear_line(str(refused.value), *mentions)
