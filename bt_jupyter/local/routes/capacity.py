"""GPU capacity and why a job waited: ``GET``/``PATCH /v1/training/capacity`` and
``GET /v1/training/jobs/{id}/queue_context``, answered from the local service's pools
(see ``local/capacity``) and its status history, in Baseten's shapes."""

from __future__ import annotations

import time
from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bt_jupyter import api, limits, spec
from bt_jupyter.local import capacity
from bt_jupyter.local.state import HOLDING, ServiceState, State
from bt_jupyter.local.store import JobRow
from bt_jupyter.local.wire import HttpError, not_found, ok, parse_body, utc
from bt_jupyter.local.wire import blocking as run

S = spec.TrainingJobStatus
router = APIRouter(prefix="/v1")
#: The local service runs on one workload plane: this machine.
PLANE = "local"


def _usage(state: ServiceState) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """GPUs held now, per pool and per (team, pool)."""
    teams = {p.id: p.team_name or "" for p in state.store.projects()}
    org: Counter[str] = Counter()
    team: Counter[tuple[str, str]] = Counter()
    for job in state.store.jobs(statuses=HOLDING):
        demand = capacity.demand_of(job.spec)
        if demand is not None:
            org[demand.gpu_type] += demand.gpus
            team[(teams.get(job.project_id, ""), demand.gpu_type)] += demand.gpus
    return org, team


def _team_item(
    team_id: str, gpu_type: str, limit: int, used: Counter[tuple[str, str]]
) -> api.TeamTrainingGpuCapacityItemV1:
    in_use = used[(team_id, gpu_type)]
    return api.TeamTrainingGpuCapacityItemV1(
        team_id=team_id,
        team_name=team_id,
        gpu_type=gpu_type,
        baseline=0,
        limit=limit,
        usage_count=in_use,
        dedicated_usage_count=in_use,
        spot_usage_count=0,
    )


def _capacity(state: ServiceState) -> api.GetTrainingGpuCapacityResponseV1:
    org_used, team_used = _usage(state)
    return api.GetTrainingGpuCapacityResponseV1(
        gpu_capacities=[
            api.TrainingGpuCapacityItemV1(
                gpu_type=gpu_type,
                baseline=limit,
                limit=limit,
                usage_count=org_used[gpu_type],
                dedicated_usage_count=org_used[gpu_type],
                spot_usage_count=0,
            )
            for gpu_type, limit in sorted(state.gpu_limits.items())
        ],
        team_gpu_capacities=[
            _team_item(team_id, gpu_type, limit, team_used)
            for (team_id, gpu_type), (limit, _) in sorted(state.store.team_capacities().items())
        ],
    )


@router.get("/training/capacity")
async def get_capacity(state: State) -> JSONResponse:
    return ok(await run(_capacity, state))


@router.patch("/training/capacity")
async def set_team_capacity(request: Request, state: State) -> JSONResponse:
    body = await parse_body(request, api.PatchTeamTrainingGpuCapacityRequestV1)
    try:
        limits.check_path_segment(body.team_id, "a team")
    except ValueError as exc:
        raise HttpError(422, "INVALID_REQUEST", f"team_id: {exc}") from None
    if body.gpu_type not in spec.ACCELERATORS:
        raise HttpError(
            422,
            "INVALID_REQUEST",
            f"gpu_type: {limits.shown(body.gpu_type)} is not a GPU type; use one of "
            + ", ".join(spec.ACCELERATORS),
        )
    await run(state.store.set_team_capacity, body.team_id, body.gpu_type, body.max_gpus)
    state.wake_queue()
    _, used = await run(_usage, state)
    item = _team_item(body.team_id, body.gpu_type, body.max_gpus, used)
    return ok(api.PatchTeamTrainingGpuCapacityResponseV1(team_gpu_capacity=item))


@router.get("/training/jobs/{job_id}/queue_context")
async def queue_context(job_id: str, state: State) -> JSONResponse:
    return ok(await run(_queue_context, state, job_id))


def _cap(gpu_type: str, limit: int | None, since: float) -> api.CapacityAtSubmitV1 | None:
    """A pool's cap as the queue context shows it (None: no cap configured)."""
    if limit is None:
        return None
    return api.CapacityAtSubmitV1(
        gpu_type=gpu_type, max_gpus=limit, last_modified=utc(since).isoformat()
    )


def _status_at(history: list[tuple[S, float]], moment: float) -> tuple[S, float] | None:
    """The job's status at ``moment`` (and when it was set); None before it existed."""
    before = [(status, at) for status, at in history if at <= moment]
    return before[-1] if before else None


def _queue_context(state: ServiceState, job_id: str) -> api.GetTrainingJobQueueContextResponseV1:
    job = state.store.job(job_id)
    if job is None:
        raise not_found("training job", job_id)
    demand = capacity.demand_of(job.spec)
    if demand is None:
        raise HttpError(
            400,
            "NO_GPU_POOL",
            f"job {job.id} asks for no GPUs: no GPU pool gated it, so it has no queue context",
        )
    history = state.store.history(job.id)
    submitted = job.created_at
    released = next((at for status, at in history if status == S.CREATED), None)
    window_end = released if released is not None else time.time()
    project = state.store.project(job.project_id)
    team_name = (project.team_name or "") if project else ""

    others: list[tuple[JobRow, list[tuple[S, float]]]] = []
    for other in state.store.jobs():
        other_demand = capacity.demand_of(other.spec)
        if other.id != job.id and other_demand and other_demand.gpu_type == demand.gpu_type:
            others.append((other, state.store.history(other.id)))

    active: list[api.ActiveJobAtSubmitV1] = []
    ahead: list[api.PendingJobAheadAtSubmitV1] = []
    for other, other_history in others:
        at_submit = _status_at(other_history, submitted)
        if at_submit is None:
            continue
        status, set_at = at_submit
        other_demand = capacity.demand_of(other.spec)
        assert other_demand is not None
        wire = state.job_wire(other)
        if status.value in HOLDING:
            active.append(
                api.ActiveJobAtSubmitV1(
                    training_job_id=other.id,
                    training_job_name=other.name,
                    instance_type_name=wire.instance_type.name,
                    total_gpus=other_demand.gpus,
                    workload_plane_name=PLANE,
                    status_at_submit=status.value,
                    status_set_at=utc(set_at).isoformat(),
                )
            )
        elif status == S.PENDING and capacity.queue_order([other, job])[0] is other:
            ahead.append(
                api.PendingJobAheadAtSubmitV1(
                    training_job_id=other.id,
                    training_job_name=other.name,
                    instance_type_name=wire.instance_type.name,
                    requested_gpus=other_demand.gpus,
                    priority=other.priority,
                    submitted_at=utc(other.created_at).isoformat(),
                )
            )
    shown = {a.training_job_id for a in active} | {p.training_job_id for p in ahead}
    involved = [job] + [other for other, _ in others if other.id in shown]
    histories = {job.id: history} | {other.id: h for other, h in others}
    events = sorted(
        (
            api.QueueEventV1(
                training_job_id=one.id,
                training_job_name=one.name,
                status=status.value,
                created=utc(at).isoformat(),
            )
            for one in involved
            for status, at in histories[one.id]
            if submitted <= at <= window_end
        ),
        key=lambda event: event.created,
    )
    org_limit = state.gpu_limits.get(demand.gpu_type)
    team_limit = state.store.team_capacities().get((team_name, demand.gpu_type))
    return api.GetTrainingJobQueueContextResponseV1(
        target_job_id=job.id,
        target_job_name=job.name,
        gpu_type=demand.gpu_type,
        requested_gpus=demand.gpus,
        submitted_at=utc(submitted).isoformat(),
        released_at=utc(released).isoformat() if released is not None else None,
        pending_seconds=round(released - submitted) if released is not None else None,
        org_capacity=_cap(demand.gpu_type, org_limit, state.started_at),
        team_capacity=_cap(demand.gpu_type, *(team_limit or (None, 0.0))),
        active_at_submit=active,
        pending_ahead_at_submit=ahead,
        events=events,
        events_window_end=utc(window_end).isoformat(),
    )
