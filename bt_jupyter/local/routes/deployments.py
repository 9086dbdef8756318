"""Local deployments of a checkpoint (``/v1/local/deployments``): create, list, get, stop
and logs. Baseten deploys through its model API instead (see models_api.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bt_jupyter import api
from bt_jupyter.errors import UnsafePathError
from bt_jupyter.local import deploy
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.store import DeploymentRow
from bt_jupyter.local.wire import FastJSON, HttpError, log_json, not_found, ok, parse_body, utc
from bt_jupyter.local.wire import blocking as run

router = APIRouter(prefix="/v1/local")


def _wire(row: DeploymentRow) -> api.LocalDeploymentV1:
    return api.LocalDeploymentV1(
        id=row.id,
        name=row.name,
        job_id=row.job_id,
        checkpoint=row.checkpoint,
        kind=row.kind,
        status=row.status,
        url=f"http://127.0.0.1:{row.port}",
        error_message=row.error_message,
        created_at=utc(row.created_at),
    )


def _find(state: ServiceState, deployment_id: str) -> DeploymentRow:
    row = state.store.deployment(deployment_id)
    if row is None:
        raise not_found("deployment", deployment_id)
    return deploy.settle(state.store, row)


@router.post("/deployments")
async def create_deployment(request: Request, state: State) -> JSONResponse:
    body = await parse_body(request, api.LocalCreateDeploymentRequestV1)
    job = state.store.job(body.job_id)
    if job is None:
        raise not_found("training job", body.job_id)
    bundle = None
    if body.model_artifact is not None:
        bundle = state.artifact_path(body.model_artifact.s3_key)
        if not bundle.is_file():
            raise HttpError(
                400,
                "ARTIFACT_NOT_FOUND",
                f"model bundle {body.model_artifact.s3_key} was not uploaded",
            )
    try:
        row = await run(
            deploy.start,
            state.home,
            state.store,
            job,
            body.checkpoint,
            body.name,
            bundle,
            body.port,
        )
    except deploy.DeployRefused as exc:
        raise HttpError(exc.status, "DEPLOY_REFUSED", str(exc)) from None
    except UnsafePathError as exc:  # a checkpoint folder whose name leads elsewhere
        raise HttpError(400, "DEPLOY_REFUSED", str(exc)) from None
    return ok(_wire(row))


@router.get("/deployments")
async def list_deployments(state: State) -> JSONResponse:
    rows = [deploy.settle(state.store, r) for r in state.store.deployments()]
    return ok(api.LocalListDeploymentsResponseV1(deployments=[_wire(r) for r in rows]))


@router.get("/deployments/{deployment_id}")
async def get_deployment(deployment_id: str, state: State) -> JSONResponse:
    return ok(_wire(_find(state, deployment_id)))


@router.post("/deployments/{deployment_id}/stop")
async def stop_deployment(deployment_id: str, state: State) -> JSONResponse:
    row = _find(state, deployment_id)
    deploy.stop(state.store, row)
    return ok(_wire(_find(state, deployment_id)))


@router.get("/deployments/{deployment_id}/logs")
async def deployment_logs(deployment_id: str, state: State) -> JSONResponse:
    row = _find(state, deployment_id)
    rows = await run(state.store.logs_after, row.id, 0, 5000)
    return FastJSON({"logs": [log_json(r) for r in rows]})  # GetLogsResponseV1's JSON
