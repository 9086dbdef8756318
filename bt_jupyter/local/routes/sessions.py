"""A job's interactive sessions: ``GET .../auth_codes`` (``truss train logs`` asks before
printing logs) and ``PATCH .../interactive_sessions/{id}`` (see ``local/sessions``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bt_jupyter import api
from bt_jupyter.local import sessions
from bt_jupyter.local.state import State
from bt_jupyter.local.wire import blocking as run
from bt_jupyter.local.wire import ok, parse_body

router = APIRouter(prefix="/v1")
JOB = "/training_projects/{project_id}/jobs/{job_id}"


@router.get(f"{JOB}/auth_codes")
async def auth_codes(project_id: str, job_id: str, state: State) -> JSONResponse:
    _, job = state.job(project_id, job_id)
    opened = await run(sessions.open_due, state.store, job, state.settings.baseten_mode)
    codes = [sessions.auth_code(s) for s in sessions.live(opened)]
    return ok(api.GetAuthCodesResponseV1(auth_codes=codes))


@router.patch(f"{JOB}/interactive_sessions/{{session_id}}")
async def patch_session(
    project_id: str, job_id: str, session_id: str, request: Request, state: State
) -> JSONResponse:
    _, job = state.job(project_id, job_id)
    body = await parse_body(request, api.PatchInteractiveSessionRequestV1)
    return ok(await run(sessions.patch, state.store, job, session_id, body))
