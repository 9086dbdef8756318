"""Property-based fuzz run of the local service, generated from Baseten's OpenAPI spec.

schemathesis generates requests for every operation of ``tests/data/baseten-training-
openapi.json``: valid ones (positive) and ones that break the schema (negative), some on
paths of a real project and job, some on generated ids. Each is sent to a live local
service, and its answer must never be a server error and, where the spec documents it,
must match the spec's response schema. The service runs with ``BT_JUPYTER_LOCAL_NO_RUN=1``:
jobs are created but never launched, so generated start commands never run as shell.

Bounded: a fixed number of examples per operation and mode (about a minute in all).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from tests.conftest import SPEC_PATH
from tests.helpers import running_service
from tests.openapi import NOT_LOCAL as NOT_LOCAL_OPERATIONS

#: Examples per operation and generation mode: 27 operations x 2 modes x this.
EXAMPLES = 8
#: The run must stay about this short (seconds), or it does not belong in `make test`.
BUDGET_S = 90
#: Operations of the spec the local service does not have (it answers them 404).
NOT_LOCAL = frozenset(f"{method} {path}" for method, path in NOT_LOCAL_OPERATIONS)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[daemon.ServiceInfo]:
    home = Home(tmp_path_factory.mktemp("fuzz_home"))
    with running_service(home, BT_JUPYTER_LOCAL_NO_RUN="1") as info:
        yield info


def _targets(http: httpx.Client) -> dict[str, str]:
    """A fresh project with one (never launched) job: real ids for generated paths."""
    project = http.post("/v1/training_projects", json={"training_project": {"name": "fuzz"}})
    project_id = project.json()["training_project"]["id"]
    job = http.post(
        f"/v1/training_projects/{project_id}/jobs",
        json={"training_job": {"image": {"base_image": "python:3.11-slim"}}},
    )
    assert job.status_code == 200, job.text
    return {
        "training_project_id": project_id,
        "training_job_id": job.json()["training_job"]["id"],
        "team_id": "fuzz-team",
        "session_id": "s",
    }


def test_fuzz_every_operation_of_the_spec(service: daemon.ServiceInfo) -> None:
    schema = schemathesis.openapi.from_path(str(Path(SPEC_PATH)))
    headers = {"Authorization": f"Bearer {service.api_key}"}
    problems: list[str] = []
    answered: dict[str, set[int]] = {}
    started = time.monotonic()
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            real = {k: v for k, v in _targets(http).items() if k in _path_names(operation.path)}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = st.one_of(
                    operation.as_strategy(generation_mode=mode, path_parameters=real),
                    operation.as_strategy(generation_mode=mode),
                )
                _run(strategy, service.url, headers, label, problems, answered)
    elapsed = time.monotonic() - started
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    documented = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}
    assert documented <= set(answered), f"never exercised: {sorted(documented - set(answered))}"
    for label, statuses in answered.items():
        if label not in NOT_LOCAL:
            assert statuses - {404, 405}, f"{label}: only ever answered {sorted(statuses)}"
    assert elapsed < BUDGET_S, f"the fuzz run took {elapsed:.0f}s"


def _path_names(path: str) -> set[str]:
    return {part[1:-1] for part in path.split("/") if part.startswith("{")}


def _run(
    strategy: Any,
    base_url: str,
    headers: dict[str, str],
    label: str,
    problems: list[str],
    answered: dict[str, set[int]],
) -> None:
    """Send ``EXAMPLES`` generated requests; record every failed check (no shrinking:
    each problem is reported as generated, and the run stays bounded)."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: Any) -> None:
        case.headers = {**(case.headers or {}), **headers}  # the key, not a generated one
        response = case.call(base_url=base_url)
        answered.setdefault(label, set()).add(response.status_code)
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except Exception as exc:  # a failed check: keep going, report them all
            first = str(exc).strip().splitlines()[:6]
            problems.append(f"{label} -> {response.status_code}: {' | '.join(first)}")

    send()
