"""Training projects and their jobs: upsert, list, get, update, stop, recreate, delete,
search. Paths and bodies are those of Baseten's training API (``/v1``)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bt_jupyter import api, limits, spec
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.local.state import State
from bt_jupyter.local.store import IdempotencyConflict
from bt_jupyter.local.wire import FastJSON, HttpError, int_param, ok, parse_body
from bt_jupyter.local.wire import blocking as run

S = spec.TrainingJobStatus
router = APIRouter(prefix="/v1")

# ---------------------------------------------------------------------- projects


async def _upsert(state: State, request: Request, team: str | None) -> JSONResponse:
    if team is not None:
        try:
            limits.check_path_segment(team, "a team")
        except ValueError as exc:
            raise HttpError(422, "INVALID_REQUEST", f"team_id: {exc}") from None
    body = await parse_body(request, api.UpsertTrainingProjectRequestV1)
    project = await run(
        state.store.upsert_project,
        body.training_project.name,
        team or body.training_project.team_name,
    )
    return ok(api.UpsertTrainingProjectResponseV1(training_project=state.project_wire(project)))


@router.post("/training_projects")
async def upsert_project(request: Request, state: State) -> JSONResponse:
    return await _upsert(state, request, None)


@router.post("/teams/{team_id}/training_projects")
async def upsert_team_project(team_id: str, request: Request, state: State) -> JSONResponse:
    return await _upsert(state, request, team_id)


@router.get("/training_projects")
async def list_projects(state: State) -> JSONResponse:
    def listed() -> dict[str, Any]:
        return {"training_projects": [state.project_json(p) for p in state.store.projects()]}

    return FastJSON(await run(listed))


@router.get("/training_projects/{project_id}")
async def get_project(project_id: str, state: State) -> JSONResponse:
    project = state.project(project_id)
    return ok(api.GetTrainingProjectResponseV1(training_project=state.project_wire(project)))


@router.delete("/training_projects/{project_id}")
async def delete_project(project_id: str, state: State) -> JSONResponse:
    project = state.project(project_id)
    live = [j.id for j in state.store.jobs(project_id=project.id) if not j.status.is_terminal]
    if live:
        raise HttpError(
            409,
            "CONFLICT",
            f"project {project.name!r} has running jobs {live}; stop them first",
        )
    for job in state.store.jobs(project_id=project.id):
        shutil.rmtree(state.home.job_dir(job.id), ignore_errors=True)
    await run(state.store.delete_project, project.id)
    return ok(api.TrainingProjectTombstoneV1(id=project.id, deleted=True))


# ---------------------------------------------------------------------- jobs


@router.post("/training_projects/{project_id}/jobs")
async def create_job(project_id: str, request: Request, state: State) -> JSONResponse:
    project = state.project(project_id)
    body = await parse_body(request, api.CreateTrainingJobRequestV1)
    for artifact in body.training_job.runtime.artifacts:
        if not await run(state.artifact_exists, artifact):
            raise HttpError(
                400,
                "ARTIFACT_NOT_FOUND",
                f"artifact s3://{artifact.s3_bucket}/{artifact.s3_key} was not uploaded to "
                "this service; PUT it to /v1/local/artifacts/{key} first",
            )
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > limits.MAX_NAME_CHARS:
        raise HttpError(
            422,
            "INVALID_REQUEST",
            f"Idempotency-Key is {len(key)} characters; at most {limits.MAX_NAME_CHARS}",
        )
    job_spec = body.training_job.model_dump(mode="json")
    try:
        job, _ = await run(
            state.create_job, project, job_spec, key, _body_hash(project.id, job_spec)
        )
    except IdempotencyConflict as conflict:
        raise HttpError(
            422,
            "IDEMPOTENCY_KEY_REUSED",
            f"this Idempotency-Key already created job {conflict.job_id} from a different "
            "request; send a new key for a new job (or the same request to get that job)",
        ) from None
    return ok(api.CreateTrainingJobResponseV1(training_job=state.job_wire(job, project)))


def _body_hash(project_id: str, job_spec: dict[str, Any]) -> str:
    """What an Idempotency-Key stands for: this job, in this project (canonical JSON, so
    the same request sent again, with its keys in another order, is the same)."""
    canonical = json.dumps([project_id, job_spec], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.get("/training_projects/{project_id}/jobs")
async def list_jobs(project_id: str, state: State) -> JSONResponse:
    """Every job of the project, as Baseten lists them (no pages). The JSON is built
    without models (``ServiceState.job_json``), off the event loop."""

    def listed() -> dict[str, Any]:
        project = state.project(project_id)
        jobs = state.store.jobs(project.id, listing=True)
        return {
            "training_project": state.project_json(project),
            "training_jobs": state.jobs_json(jobs, project),
        }

    return FastJSON(await run(listed))


@router.get("/training_projects/{project_id}/jobs/{job_id}")
async def get_job(project_id: str, job_id: str, state: State) -> JSONResponse:
    project, job = state.job(project_id, job_id)
    return ok(
        api.GetTrainingJobResponseV1(
            training_project=state.project_wire(project),
            training_job=state.job_wire(job, project),
        )
    )


@router.patch("/training_projects/{project_id}/jobs/{job_id}")
async def update_job(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    project, job = state.job(project_id, job_id)
    body = await parse_body(request, api.UpdateTrainingJobRequestV1)
    if not await run(state.store.set_priority, job.id, body.priority):
        raise HttpError(
            409,
            "CONFLICT",
            f"job {job.id} is {state.job(project_id, job_id)[1].status.short}: only a PENDING "
            "job's priority can change (it decides the order in which waiting jobs start)",
        )
    state.wake_queue()
    job = state.job(project_id, job_id)[1]
    return ok(api.UpdateTrainingJobResponseV1(training_job=state.job_wire(job, project)))


@router.delete("/training_projects/{project_id}/jobs/{job_id}")
async def delete_job(project_id: str, job_id: str, state: State) -> JSONResponse:
    project, job = state.job(project_id, job_id)
    if not job.status.is_terminal:
        raise HttpError(409, "CONFLICT", f"job {job.id} is {job.status.short}; stop it first")
    shutil.rmtree(state.home.job_dir(job.id), ignore_errors=True)
    await run(state.store.delete_job, job.id)
    return ok(api.TrainingJobTombstoneV1(id=job.id, deleted=True, training_project_id=project.id))


@router.post("/training_projects/{project_id}/jobs/{job_id}/stop")
async def stop_job(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    project, job = state.job(project_id, job_id)
    await parse_body(request, api.StopTrainingJobRequestV1)
    if not job.status.is_terminal:
        await run(state.dispatcher.stop, job)
        state.wake_queue()  # a stopped job frees its GPUs, or its place in the queue
    job = state.job(project_id, job_id)[1]
    return ok(api.StopTrainingJobResponseV1(training_job=state.job_wire(job, project)))


@router.post("/training_projects/{project_id}/jobs/{job_id}/recreate")
async def recreate_job(project_id: str, job_id: str, state: State) -> JSONResponse:
    project, job = state.job(project_id, job_id)
    new, _ = await run(state.create_job, project, job.spec, None)
    return ok(api.RecreateTrainingJobResponseV1(training_job=state.job_wire(new, project)))


@router.get("/local/training_jobs")
async def job_page(request: Request, state: State) -> JSONResponse:
    """A page of jobs, newest first (``limit``; 0: all), older than the job ``after``
    (``after_created``: its creation time, for when it was deleted meanwhile), with how
    many match in each status: the sidebar of a 10,000-job service reads one page."""
    query = request.query_params
    project_id = query.get("project_id") or None
    try:
        statuses = [S.parse(s).value for s in query.getlist("status")] or None
    except InvalidConfigError as exc:
        raise HttpError(422, "INVALID_REQUEST", str(exc)) from None
    limit = int_param(request, "limit", 0, 0, 100_000) or None
    after_id = query.get("after")
    after = None
    if after_id is not None:
        if len(after_id) > limits.MAX_NAME_CHARS:
            raise HttpError(422, "INVALID_REQUEST", f"after {limits.shown(after_id)} is no job id")
        created = query.get("after_created", "0")
        try:
            after = (after_id, float(created))
        except ValueError:
            after = None
        if after is None or not math.isfinite(after[1]):
            raise HttpError(
                422,
                "INVALID_REQUEST",
                f"after_created must be a time in epoch seconds, got {limits.shown(created)}",
            )

    def page() -> dict[str, Any]:
        if project_id is not None:
            state.project(project_id)  # 404 for a project that is not there
        # one more than asked: whether there is a next page
        jobs, counts = state.store.job_page(project_id, statuses, limit and limit + 1, after)
        return {
            "training_jobs": state.jobs_json(jobs[:limit]),
            "total": sum(counts.values()),
            "status_counts": counts,
            "more": limit is not None and len(jobs) > limit,
        }

    return FastJSON(await run(page))


@router.post("/training_jobs/search")
async def search_jobs(request: Request, state: State) -> JSONResponse:
    body = await parse_body(request, api.SearchTrainingJobsRequestV1)
    order = body.order_by[0] if body.order_by else api.OrderByV1(field="created_at", order="desc")
    statuses = [S.parse(s).value for s in body.statuses or []] if body.statuses else None

    def found() -> dict[str, Any]:
        jobs = state.store.jobs(
            body.project_id, body.job_id, statuses, order.order, order.field, listing=True
        )
        return {"training_jobs": state.jobs_json(jobs)}

    return FastJSON(await run(found))
