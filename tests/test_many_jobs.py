"""1,000 jobs at a glance: the job lists of a project with 1,000 jobs (rows written straight
into the store of a private local service, ended, no process run).

Baseten's list and search answer every job; the views this project owns (``%bt_jobs``,
the sidebar's ``bt-jupyter/jobs``) answer a page of the newest, saying how to see more.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

# pytest-jupyter's fixtures for this module only (see test_server.py)
from pytest_jupyter.jupyter_server import *  # noqa: F403

from bt_jupyter import api, spec
from bt_jupyter.backends.base import page_of
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.conftest import magics_on
from tests.helpers import running_service

S = spec.TrainingJobStatus
BIG = 1000
#: Jobs of the other project (so "every project" differs from "the big one").
OTHER = 150


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, ApiClient]]:
    """A private service (the session's one is shared by other tests) with a big project."""
    home = Home(tmp_path_factory.mktemp("bt_many"))
    with running_service(home), ApiClient.local(home.root) as client:
        yield home, client


@pytest.fixture(scope="module")
def big(many: tuple[Home, ApiClient]) -> api.TrainingProjectV1:
    home, client = many
    project = client.upsert_project("many-big")
    other = client.upsert_project("many-other")
    ids = insert_jobs(home, project.id, BIG, start=time.time() - 10 * 86400)
    insert_jobs(home, other.id, OTHER, start=time.time() - 10 * 86400 + 30)
    assert len(ids) == BIG
    return project


def job_spec(n: int) -> dict[str, Any]:
    """What ``%%bt_train`` stores: GPU jobs with checkpointing, CPU jobs without."""
    gpu = n % 3 == 0
    job = spec.TrainingJob(
        image=spec.Image(base_image="python:3.11-slim"),
        compute=spec.Compute(node_count=2 if gpu else 1, accelerator="H100:8" if gpu else None),
        runtime=spec.Runtime(
            start_commands=["python bt_entry.py"],
            checkpointing_config=spec.CheckpointingConfig(enabled=gpu),
        ),
        name=f"run-{n:04d}",
    )
    return api.CreateTrainingJobV1.of(job).model_dump(mode="json")


def insert_jobs(
    home: Home, project_id: str, count: int, start: float, spec_text: str | None = None
) -> list[str]:
    """``count`` ended jobs, one a minute from ``start`` (the ids, oldest first)."""
    rows = []
    for n in range(count):
        body = job_spec(n)
        status = S.FAILED if n % 5 == 0 else S.COMPLETED
        created = start + n * 60
        text = spec_text or json.dumps(body)
        nodes = body["compute"]["node_count"]
        rows.append((new_id(10), project_id, body["name"], text, status.value, nodes, created))
    with closing(sqlite3.connect(home.db, timeout=60)) as db, db:
        db.executemany(
            "INSERT INTO jobs (id, project_id, name, spec, status, node_count, created_at,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?)",
            [(*row, row[-1] + 30) for row in rows],
        )
    return [r[0] for r in rows]


def stored_ids(home: Home, project_id: str | None = None) -> list[str]:
    """The jobs' ids, newest first, as the store orders them."""
    where = "WHERE project_id = ?" if project_id else ""
    with closing(sqlite3.connect(home.db)) as db:
        rows = db.execute(
            f"SELECT id FROM jobs {where} ORDER BY created_at DESC, rowid DESC",
            (project_id,) if project_id else (),
        )
        return [r[0] for r in rows]


# ---------------------------------------------------------------------- Baseten's API


def test_list_and_search_answer_every_job_newest_first(
    many: tuple[Home, ApiClient], big: api.TrainingProjectV1
) -> None:
    home, client = many
    expected = stored_ids(home, big.id)
    listed = client.request("GET", f"/v1/training_projects/{big.id}/jobs").json()
    assert [j["id"] for j in listed["training_jobs"]] == expected
    assert listed["training_project"]["latest_job"]["id"] == expected[0]
    searched = client.request("POST", "/v1/training_jobs/search", json={"project_id": big.id})
    assert searched.json()["training_jobs"] == listed["training_jobs"]
    everything = client.request("POST", "/v1/training_jobs/search", json={}).json()
    assert [j["id"] for j in everything["training_jobs"]] == stored_ids(home)
    oldest_first = client.request(
        "POST",
        "/v1/training_jobs/search",
        json={"project_id": big.id, "order_by": [{"field": "created_at", "order": "asc"}]},
    ).json()
    assert [j["id"] for j in oldest_first["training_jobs"]] == expected[::-1]
    failed = client.search_jobs(project_id=big.id, statuses=[S.FAILED])
    assert [j.id for j in failed] == [i for i in expected if i in {f.id for f in failed}]
    assert len(failed) == BIG // 5


@pytest.mark.parametrize(
    "spec_text",
    [
        "no json",
        '{"compute": {"node_count": 1, "cpu_count": 4, "memory": "8Gi"}, "x": NaN}',
        '{"compute": "H100", "runtime": "python"}',
        '{"compute": {"accelerator": {"accelerator": "H100", "count": 99}},'
        ' "runtime": {"checkpointing_config": {"enabled": true}}}',
        '{"runtime": {"checkpointing_config": "yes"}}',
        "[1, 2]",
    ],
)
def test_a_list_shows_each_job_as_the_job_itself_does(
    many: tuple[Home, ApiClient], spec_text: str
) -> None:
    """The list cuts the spec's parts out in SQLite; a job there (also one whose stored
    spec is odd) is exactly what GET of that job answers (the whole spec, read in Python)."""
    home, client = many
    project = client.upsert_project(f"odd-{new_id()}")
    [job_id] = insert_jobs(home, project.id, 1, start=time.time() - 3600, spec_text=spec_text)
    one = client.request("GET", f"/v1/training_projects/{project.id}/jobs/{job_id}").json()
    listed = client.request("GET", f"/v1/training_projects/{project.id}/jobs").json()
    assert listed["training_jobs"] == [one["training_job"]]
    assert listed["training_project"] == one["training_project"]
    api.ListTrainingJobsResponseV1.model_validate(listed)


# ---------------------------------------------------------------------- %bt_jobs


def table_ids(text: str) -> list[str]:
    """The job ids of ``%bt_jobs``'s rows (the lines after its header that name a job)."""
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["id", "status"], text
    return [line.split()[0] for line in lines[1:] if line and not line.startswith("...")]


def test_bt_jobs_shows_the_newest_and_says_how_to_see_the_rest(
    many: tuple[Home, ApiClient], big: api.TrainingProjectV1
) -> None:
    home, _ = many
    expected = stored_ids(home, big.id)
    with magics_on(home, big.name) as shell:
        with capture_output() as out:
            shell.run_line_magic("bt_jobs", "")
        assert table_ids(out.stdout) == expected[:50]
        assert out.stdout.splitlines()[-1] == (
            "... 950 older jobs not shown (the newest 50 of 1,000): add --limit 0 to show "
            "all, or --limit N for the newest N"
        )
        with capture_output() as out:
            shell.run_line_magic("bt_jobs", "--limit 7 --status FAILED")
        failed = [i for i in expected if i in set(stored_ids_with(home, big.id, S.FAILED))]
        assert table_ids(out.stdout) == failed[:7]
        assert "193 older jobs not shown (the newest 7 of 200)" in out.stdout
        with capture_output() as out:
            shell.run_line_magic("bt_jobs", "--limit 0")
        assert table_ids(out.stdout) == expected
        assert "not shown" not in out.stdout
        with capture_output() as out:
            shell.run_line_magic("bt_jobs", f"--limit {BIG}")
        assert table_ids(out.stdout) == expected
        assert "not shown" not in out.stdout
        for bad in ["-1", "ten", "10000000"]:
            with pytest.raises(UsageError, match="--limit") as raised:
                shell.run_line_magic("bt_jobs", f"--limit {bad}")
            assert "\n" not in str(raised.value)


def stored_ids_with(home: Home, project_id: str, status: S) -> list[str]:
    with closing(sqlite3.connect(home.db)) as db:
        rows = db.execute(
            "SELECT id FROM jobs WHERE project_id = ? AND status = ?", (project_id, status.value)
        )
        return [r[0] for r in rows]


def test_bt_jobs_in_an_empty_project_names_those_with_jobs(
    many: tuple[Home, ApiClient], big: api.TrainingProjectV1
) -> None:
    home, _ = many
    with magics_on(home, f"empty-{new_id()}") as shell, capture_output() as out:
        shell.run_line_magic("bt_jobs", "")
    assert "'many-big'" in out.stdout, out.stdout
    assert "'many-other'" in out.stdout
    assert "%bt_jobs --all" in out.stdout


# ---------------------------------------------------------------------- the sidebar


@pytest.fixture
def jp_server_config(many: tuple[Home, ApiClient]) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"bt_jupyter": True}},
        "BtJupyterServer": {"local_home": str(many[0].root)},
    }


@pytest.fixture
def sidebar(jp_fetch: Any, jp_asyncio_loop: Any) -> Any:
    """``sidebar(**params)`` -> (status code, JSON body) of ``GET bt-jupyter/jobs``."""

    def get(**params: Any) -> tuple[int, Any]:
        fetch = jp_fetch(
            "bt-jupyter",
            "jobs",
            params={k: str(v) for k, v in params.items()},
            raise_error=False,
            request_timeout=60,
        )
        response = jp_asyncio_loop.run_until_complete(fetch)
        return response.code, json.loads(response.body)

    return get


def all_pages(sidebar: Any, **params: Any) -> list[dict[str, Any]]:
    """Every page, following the cursors; each page's totals checked."""
    jobs: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(BIG):
        code, page = sidebar(cursor=cursor, **params)
        assert code == 200, page
        jobs += page["jobs"]
        cursor = page["cursor"]
        if cursor is None:
            return jobs
        assert len(page["jobs"]) == int(params["limit"])
    raise AssertionError("the pages never ended")


def test_the_sidebar_pages_through_every_job_once_in_order(
    many: tuple[Home, ApiClient], big: api.TrainingProjectV1, sidebar: Any
) -> None:
    home, _ = many
    expected = stored_ids(home, big.id)
    code, first = sidebar(project=big.name, limit=50)
    assert code == 200
    assert [j["id"] for j in first["jobs"]] == expected[:50]
    assert first["total"] == BIG
    assert first["status_counts"] == {"COMPLETED": 800, "FAILED": 200}
    paged = all_pages(sidebar, project=big.name, limit=137)
    assert [j["id"] for j in paged] == expected
    unpaged = sidebar(project=big.name)[1]
    assert unpaged["jobs"] == paged
    assert unpaged["cursor"] is None
    everything = all_pages(sidebar, limit=1000)
    assert [j["id"] for j in everything] == stored_ids(home)


def test_a_page_stays_put_when_new_jobs_arrive_or_its_last_job_goes(
    many: tuple[Home, ApiClient], sidebar: Any
) -> None:
    home, client = many
    project = client.upsert_project(f"moving-{new_id()}")
    insert_jobs(home, project.id, 30, start=time.time() - 7200)
    before = stored_ids(home, project.id)
    code, first = sidebar(project=project.name, limit=10)
    assert code == 200
    assert [j["id"] for j in first["jobs"]] == before[:10]
    insert_jobs(home, project.id, 5, start=time.time() - 60)  # newer: at the front
    code, second = sidebar(project=project.name, limit=10, cursor=first["cursor"])
    assert code == 200
    assert [j["id"] for j in second["jobs"]] == before[10:20]
    assert second["total"] == 35
    client.delete_job(project.id, before[19])  # the job the second page's cursor names
    code, third = sidebar(project=project.name, limit=10, cursor=second["cursor"])
    assert code == 200
    assert [j["id"] for j in third["jobs"]] == before[20:30]
    assert third["cursor"] is None


def _cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": -1}, "limit must be an integer from 1 to 1000, got '-1'"),
        ({"limit": 0}, "limit must be an integer from 1 to 1000"),
        ({"limit": 1001}, "limit must be an integer from 1 to 1000"),
        ({"limit": 10**30}, "limit must be an integer from 1 to 1000"),
        ({"limit": "ten"}, "got 'ten'"),
        ({"limit": "٣"}, "limit must be an integer"),
        ({"cursor": "garbage!"}, "is not one this server gave"),
        ({"cursor": _cursor_of({"id": 1})}, "is not one this server gave"),
        ({"cursor": _cursor_of(["abc", "yesterday"])}, "is not one this server gave"),
        ({"cursor": _cursor_of("[" * 150)}, "is not one this server gave"),
        ({"cursor": "A" * 5000}, "is not one this server gave"),
    ],
)
def test_a_bad_page_is_one_400_line(
    many: tuple[Home, ApiClient], sidebar: Any, params: dict[str, Any], words: str
) -> None:
    code, body = sidebar(**params)
    assert code == 400, body
    assert words in body["message"], body
    assert "\n" not in body["message"]


def test_the_job_json_is_the_wire_models_json(
    many: tuple[Home, ApiClient], big: api.TrainingProjectV1
) -> None:
    """The list's JSON is built without models; each job in it reads back as the model
    and dumps to the same JSON (times in pydantic's form, every field present)."""
    _, client = many
    answer = client.request("POST", "/v1/training_jobs/search", json={}).json()
    for job in answer["training_jobs"][:200]:
        assert api.TrainingJobV1.model_validate(job).model_dump(mode="json") == job


def test_baseten_pages_are_cut_from_its_search_as_the_local_service_pages(
    many: tuple[Home, ApiClient], big: api.TrainingProjectV1
) -> None:
    """Baseten's search answers every job: ``page_of`` cuts the same pages out of it as
    the local service's page endpoint answers (moving on from a deleted job too)."""
    _, client = many
    found = client.search_jobs(project_id=big.id)
    after = None
    local_ids: list[str] = []
    cut_ids: list[str] = []
    while True:
        local = client.job_page(big.id, None, 300, after)
        cut = page_of(found, 300, after)
        assert (cut.total, cut.more) == (local.total, local.more)
        assert {s.value: n for s, n in cut.status_counts.items()} == local.status_counts
        local_ids += [j.id for j in local.training_jobs]
        cut_ids += [j.id for j in cut.jobs]
        if not local.more:
            break
        last = local.training_jobs[-1]
        after = (last.id, last.created_at.timestamp())
    assert local_ids == cut_ids == [j.id for j in found]
    gone = (f"gone-{new_id()}", found[499].created_at.timestamp())  # as if deleted
    assert [j.id for j in page_of(found, 2, gone).jobs] == [j.id for j in found[500:502]]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": -1}, "limit must be between 0 and 100000"),
        ({"limit": 10**12}, "limit must be between 0 and 100000"),
        ({"status": "FINISHED"}, "unknown job status 'FINISHED'"),
        ({"after": "abc", "after_created": "nan"}, "after_created must be a time"),
        ({"after": "abc", "after_created": "soon"}, "after_created must be a time"),
        ({"after": "x" * 5000}, "is no job id"),
    ],
)
def test_the_local_job_page_refuses_what_it_cannot_use(
    many: tuple[Home, ApiClient], params: dict[str, Any], words: str
) -> None:
    _, client = many
    response = client._http.get("/v1/local/training_jobs", params=params)
    assert response.status_code == 422, response.text
    assert words in response.json()["message"]
    missing = client._http.get("/v1/local/training_jobs", params={"project_id": "../nope"})
    assert missing.status_code == 404
