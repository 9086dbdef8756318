"""What a job says while it runs: logs (Baseten's window query and the local long-poll
follow), its status history, resource metrics, and the (empty) interactive-session codes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bt_jupyter import api, limits
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.wire import (
    FastJSON,
    HttpError,
    int_param,
    log_json,
    log_page_json,
    ok,
    parse_body,
    parse_query,
    utc,
)
from bt_jupyter.local.wire import blocking as run

FOLLOW_POLL_SECONDS = 0.02
#: The largest value a SQLite integer (a log's timestamp or cursor) holds.
MAX_INT64 = 2**63 - 1
#: In baseten mode every LATE_EVERY-th log line reaches the log API late.
LATE_EVERY = 3

router = APIRouter(prefix="/v1")

# ---------------------------------------------------------------------- logs


async def _logs(
    state: ServiceState, project_id: str, job_id: str, query: api.GetTrainingJobLogsRequestV1
) -> JSONResponse:
    _, job = state.job(project_id, job_id)
    start, end = _log_window(query)
    late_s = state.settings.log_late_s if state.settings.baseten_mode else 0.0
    if state.settings.log_latency_s > 0:  # the cloud's round trip, for benches
        await asyncio.sleep(state.settings.log_latency_s)
    rows = await run(
        state.store.logs,
        job.id,
        start * 1_000_000,
        min((end + 1) * 1_000_000 - 1, MAX_INT64),
        query.direction != api.SortOrderV1.ASC,  # newest first unless asked, as on Baseten
        query.limit or 500,
        query.min_level.value if query.min_level else None,
        LATE_EVERY if late_s > 0 else 0,
        time.time_ns() - int(late_s * 1e9),
    )
    return FastJSON({"logs": [log_json(r) for r in rows]})  # GetLogsResponseV1's JSON


@router.get("/training_projects/{project_id}/jobs/{job_id}/logs")
async def get_logs(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    query = parse_query(request, api.GetTrainingJobLogsRequestV1)
    return await _logs(state, project_id, job_id, query)


@router.post("/training_projects/{project_id}/jobs/{job_id}/logs")
async def post_logs(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    query = await parse_body(request, api.GetTrainingJobLogsRequestV1)
    return await _logs(state, project_id, job_id, query)


def _log_window(query: api.GetTrainingJobLogsRequestV1) -> tuple[int, int]:
    """(start, end) in epoch ms as Baseten reads them: end defaults to now, start to 30
    minutes before the end; a window over 7 days is refused."""
    end = query.end_epoch_millis
    if end is None:
        end = time.time_ns() // 1_000_000
    start = query.start_epoch_millis
    if start is None:
        start = end - api.DEFAULT_LOG_WINDOW_MS
    if start > end:
        raise HttpError(
            400,
            "INVALID_REQUEST",
            f"start_epoch_millis ({start}) is after end_epoch_millis ({end})",
        )
    if end - start > api.MAX_LOG_WINDOW_MS:
        raise HttpError(
            400,
            "INVALID_REQUEST",
            "the window from start_epoch_millis to end_epoch_millis must not exceed 7 days "
            f"(asked for {(end - start) / 86_400_000:.1f} days)",
        )
    return start, end


# ---------------------------------------------------------------------- metrics


async def _metrics(
    state: ServiceState, project_id: str, job_id: str, query: api.GetTrainingJobMetricsRequestV1
) -> JSONResponse:
    project, job = state.job(project_id, job_id)
    start = query.start_epoch_millis / 1000 if query.start_epoch_millis is not None else None
    end = query.end_epoch_millis / 1000 if query.end_epoch_millis is not None else None
    rows = await run(state.store.metrics, job.id, start, end)
    per_node = []
    for rank in range(job.node_count):
        series = [r for r in rows if r.node == rank]
        per_node.append(
            api.TrainingJobNodeMetricsV1(node_id=str(rank), metrics=_node_metrics(series))
        )
    leader = per_node[0].metrics if per_node else api.TrainingJobMetricsV1()
    cache = None
    if ((job.spec.get("runtime") or {}).get("cache_config") or {}).get("enabled"):
        size = _tree_size(state.home.project_cache(project.id))
        point = api.TrainingJobMetricV1(value=size, timestamp=utc(time.time()))
        cache = api.StorageMetricsV1(usage_bytes=[point], utilization=[])
    return ok(
        api.GetTrainingJobMetricsResponseV1(
            **leader.model_dump(),
            training_job=state.job_wire(job, project),
            cache=cache,
            per_node_metrics=per_node,
        )
    )


@router.get("/training_projects/{project_id}/jobs/{job_id}/metrics")
async def get_metrics(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    query = parse_query(request, api.GetTrainingJobMetricsRequestV1)
    return await _metrics(state, project_id, job_id, query)


@router.post("/training_projects/{project_id}/jobs/{job_id}/metrics")
async def post_metrics(
    project_id: str, job_id: str, request: Request, state: State
) -> JSONResponse:
    query = await parse_body(request, api.GetTrainingJobMetricsRequestV1)
    return await _metrics(state, project_id, job_id, query)


def _node_metrics(rows: list[Any]) -> api.TrainingJobMetricsV1:
    def point(value: float, at: float) -> api.TrainingJobMetricV1:
        return api.TrainingJobMetricV1(value=value, timestamp=utc(at))

    gpu_util: dict[str, list[api.TrainingJobMetricV1]] = {}
    gpu_mem: dict[str, list[api.TrainingJobMetricV1]] = {}
    for r in rows:
        for index, sample in r.gpus.items():
            gpu_util.setdefault(index, []).append(point(sample["utilization"], r.at))
            gpu_mem.setdefault(index, []).append(point(sample["memory_bytes"], r.at))
    return api.TrainingJobMetricsV1(
        gpu_memory_usage_bytes=gpu_mem,
        gpu_utilization=gpu_util,
        cpu_usage=[point(r.cpu_usage, r.at) for r in rows],
        cpu_memory_usage_bytes=[point(r.memory_bytes, r.at) for r in rows],
        ephemeral_storage=api.StorageMetricsV1(
            usage_bytes=[point(r.storage_bytes, r.at) for r in rows], utilization=[]
        ),
    )


def _tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


# ---------------------------------------------------------------------- local extensions


@router.get("/local/training_projects/{project_id}/jobs/{job_id}/logs/follow")
async def follow_logs(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    """Long-poll: lines after ``cursor`` as soon as there are any (or ``timeout``).

    The cursor is the store's append order, so reconnecting with the last cursor
    gives no duplicates and no gaps. ``done`` is true once the job is terminal and
    every line has been returned. With ``tail=N`` (a view that shows recent lines,
    such as the widget) only the newest N lines come back, plus the older ones that
    hold ``keep_containing``, and ``skipped`` counts the rest.
    """
    _, job = state.job(project_id, job_id)
    cursor = await run(_cursor, state, job.id, request, "cursor") or 0
    limit = int_param(request, "limit", 1000, 1, 5000)
    tail = int_param(request, "tail", 0, 0, 5000)
    keep_containing = request.query_params.get("keep_containing", "")
    if len(keep_containing) > limits.MAX_NAME_CHARS:
        raise HttpError(
            422,
            "INVALID_REQUEST",
            f"keep_containing is {len(keep_containing):,} characters; "
            f"at most {limits.MAX_NAME_CHARS}",
        )
    timeout = int_param(request, "timeout", 20, 0, 60)
    deadline = time.monotonic() + timeout
    skipped = 0
    while True:
        # one row read per poll (this loop runs every 20 ms for every follower)
        current = await run(state.store.job, job.id) or job
        terminal = current.status.is_terminal
        if tail:
            rows, skipped = await run(
                state.store.logs_tail_after, job.id, cursor, tail, keep_containing
            )
        else:
            rows = await run(state.store.logs_after, job.id, cursor, limit)
        if rows or terminal or time.monotonic() >= deadline or await request.is_disconnected():
            break
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
    next_cursor = rows[-1].id if rows else cursor
    return FastJSON(
        {
            "logs": [{**log_json(r), "cursor": r.id} for r in rows],
            "cursor": next_cursor,
            "skipped": skipped,
            "status": current.status.value,
            "done": terminal and (bool(tail) or len(rows) < limit),
        }
    )


#: Most lines of one bulk page (about 4 MB of JSON for short lines).
MAX_PAGE_LINES = 100_000


def _cursor(state: ServiceState, job_id: str, request: Request, name: str) -> int | None:
    """A line position the caller got from this job's log; None when not given. A cursor
    of another job's log would silently read from the wrong place, so it is refused."""
    raw = request.query_params.get(name)
    if raw is None or (name == "before" and raw == "end"):
        return None if raw is None else MAX_INT64
    cursor = int_param(request, name, 0, 0, MAX_INT64)
    if cursor and not state.store.owns_log_line(job_id, cursor):
        raise HttpError(
            422,
            "INVALID_REQUEST",
            f"{name}={cursor} is not a position in job {job_id}'s log (a cursor of another "
            "job?); start from 0, or pass a cursor this job's log returned",
        )
    return cursor


@router.get("/local/training_projects/{project_id}/jobs/{job_id}/logs/lines")
async def log_lines(project_id: str, job_id: str, request: Request, state: State) -> Response:
    """Bulk read: up to ``limit`` lines after cursor ``after`` (or the newest before
    ``before``; ``before=end``: the newest of all) as JSON columns SQLite writes itself.

    ``wait`` seconds (with ``after``): long-poll until there is a line. ``last`` is the
    cursor to continue from, ``first`` the one to read further back from; ``done`` is true
    once the job is terminal and every line after the cursor was returned. ``ahead=1``:
    ``next_end`` is where the next page of ``limit`` lines ends (0: it is not full yet),
    so a reader can ask for two pages at a time.
    """
    _, job = state.job(project_id, job_id)
    after = await run(_cursor, state, job.id, request, "after") or 0
    before = await run(_cursor, state, job.id, request, "before")
    if before is not None and "after" in request.query_params:
        raise HttpError(422, "INVALID_REQUEST", "give after= or before=, not both")
    limit = int_param(request, "limit", 50_000, 1, MAX_PAGE_LINES)
    node = (
        int_param(request, "node", 0, 0, limits.MAX_NODE_COUNT - 1)
        if "node" in request.query_params
        else None
    )
    ahead = bool(int_param(request, "ahead", 0, 0, 1))
    deadline = time.monotonic() + int_param(request, "wait", 0, 0, 60)
    while True:
        current = await run(state.store.job, job.id) or job  # before the read: see done
        page = await run(state.store.log_page, job.id, after, before, limit, node, ahead)
        terminal = current.status.is_terminal
        if (
            page.count
            or terminal
            or before is not None
            or time.monotonic() >= deadline
            or await request.is_disconnected()
        ):
            break
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
    done = terminal and page.count < limit and before is None
    last = page.last_id if page.count else after
    body = log_page_json(page, last, current.status.value, done)
    return Response(body, media_type="application/json")


@router.get("/local/training_projects/{project_id}/jobs/{job_id}/history")
async def job_history(project_id: str, job_id: str, state: State) -> JSONResponse:
    """Every status the job reached, with when: the widget's lifecycle stepper."""
    _, job = state.job(project_id, job_id)
    history = await run(state.store.history, job.id)
    return JSONResponse(
        {"history": [{"status": s.value, "at": utc(at).isoformat()} for s, at in history]}
    )
