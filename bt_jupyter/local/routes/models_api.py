"""Baseten's model side, served by the local service: what deploying a checkpoint needs.

- ``POST /graphql/`` answers the operations Baseten's CLI sends for training: ``teams``,
  ``listed_instances`` and ``create_model_version_from_inference_template`` (checked
  field by field against the shape the CLI builds; anything else is a GraphQL error).
- ``/v1/models/{model_id}/deployments/{deployment_id}`` (get, ``/logs``, ``/deactivate``).
- ``/v1/local/model_gateway/model-{model_id}/deployment/{id}/...`` stands in for
  ``model-{model_id}.api.baseten.co``: ``/predict`` and ``/sync/v1/...`` reach the
  deployment's serving process.

A "model" is the oracle name; each deploy makes a new version (a local deployment).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bt_jupyter import api, serving_api
from bt_jupyter.local import checkpoints, deploy
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.store import DeploymentRow, JobRow
from bt_jupyter.local.wire import HttpError, blocking, log_json, utc

#: Local deployment status -> Baseten's model deployment status.
STATUS = {"DEPLOYING": "DEPLOYING", "ACTIVE": "ACTIVE", "FAILED": "FAILED", "STOPPED": "INACTIVE"}
TEAMS_ENV = "BT_JUPYTER_SERVICE_TEAMS"
DEFAULT_TEAMS = {"Personal": "personal"}


def _instance(
    gpu: str | None, count: int, cpu: int, mem_gib: int, nodes: int = 1
) -> dict[str, Any]:
    kind = f"{gpu}:{count}" if gpu else "CPU"
    return {
        "id": f"{kind}x{cpu}x{mem_gib}" + (f"x{nodes}n" if nodes > 1 else ""),
        "name": f"{kind} {cpu} vCPU {mem_gib} GiB" + (f" x {nodes} nodes" if nodes > 1 else ""),
        "millicpuLimit": cpu * 1000,
        "memoryLimit": mem_gib * 1024**3,
        "gpuCount": count,
        "gpuType": gpu,
        "gpuMemory": {"T4": 16, "L4": 24, "A10G": 24, "A100": 80, "H100": 80, "H200": 141}.get(
            gpu or "", 0
        )
        * 1024,
        "default": gpu is None and cpu == 1,
        "displayName": f"{kind}, {cpu} vCPU, {mem_gib} GiB",
        "nodeCount": nodes,
        "price": None,
        "limitedCapacity": False,
    }


#: A catalogue shaped like Baseten's: CPU sizes, one to eight GPUs, one multi-node type.
INSTANCES = [
    _instance(None, 0, 1, 2),
    _instance(None, 0, 4, 16),
    _instance("T4", 1, 4, 16),
    _instance("L4", 1, 4, 16),
    _instance("L4", 2, 24, 96),
    _instance("A10G", 1, 4, 16),
    _instance("A10G", 2, 24, 96),
    _instance("A10G", 4, 48, 192),
    _instance("A100", 1, 12, 144),
    _instance("A100", 2, 24, 288),
    _instance("A100", 8, 92, 1152),
    _instance("H100", 1, 26, 234),
    _instance("H100", 2, 52, 468),
    _instance("H100", 4, 104, 936),
    _instance("H100", 8, 208, 1872),
    _instance("H200", 1, 26, 234),
    _instance("H200", 8, 208, 1872),
    _instance("H100", 8, 208, 1872, nodes=2),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Checkpoint(_Strict):
    training_job_id: str
    checkpoint_name: str


class _CheckpointSource(_Strict):
    checkpoint: _Checkpoint


class _WeightsSource(_Strict):
    weight_source_type: Literal["B10_CHECKPOINTING"]
    b10_training_checkpoint_weights_source: _CheckpointSource


class _EnvVar(_Strict):
    name: str
    value: str
    is_secret_reference: bool


class _Stack(_Strict):
    stack_type: Literal["VLLM"]
    environment_variables: list[_EnvVar]


class _Metadata(_Strict):
    oracle_name: str = Field(pattern=r"^[0-9a-zA-Z_\-.]+$")


class InferenceTemplateRequest(_Strict):
    """``CreateModelVersionFromInferenceTemplateRequest`` as Baseten's CLI fills it."""

    metadata: _Metadata
    weights_sources: list[_WeightsSource] = Field(min_length=1, max_length=1)
    inference_stack: _Stack
    instance_type_id: str
    dry_run: bool


class GraphQLFailure(Exception):
    def __init__(self, message: str, code: str = "VALIDATION_ERROR") -> None:
        super().__init__(message)
        self.code = code


def model_id(oracle_name: str) -> str:
    """A model per oracle name, as on Baseten (a deploy adds a version to it)."""
    return "m" + hashlib.sha256(oracle_name.encode()).hexdigest()[:7]


def teams() -> list[dict[str, Any]]:
    """``$BT_JUPYTER_SERVICE_TEAMS`` ("Name=id,Other=id2"), else one personal team."""
    raw = os.environ.get(TEAMS_ENV, "")
    pairs = dict(p.split("=", 1) for p in raw.split(",") if "=" in p) or DEFAULT_TEAMS
    return [
        {"id": tid.strip(), "name": name.strip(), "default": i == 0}
        for i, (name, tid) in enumerate(pairs.items())
    ]


def _truss_config(request: InferenceTemplateRequest, instance: dict[str, Any]) -> str:
    """The truss config Baseten answers with: vLLM on the checkpoint's weights."""
    source = request.weights_sources[0].b10_training_checkpoint_weights_source.checkpoint
    variables = request.inference_stack.environment_variables
    env = {v.name: v.value for v in variables if not v.is_secret_reference}
    secrets = {v.value: None for v in variables if v.is_secret_reference}
    accelerator = f"{instance['gpuType']}:{instance['gpuCount']}" if instance["gpuType"] else None
    return json.dumps(
        {
            "model_name": request.metadata.oracle_name,
            "resources": {"accelerator": accelerator, "use_gpu": accelerator is not None},
            "environment_variables": env,
            "secrets": secrets,
            "training_checkpoints": {
                "download_folder": "/tmp/training_checkpoints",
                "artifact_references": [
                    {
                        "training_job_id": source.training_job_id,
                        "paths": [_checkpoint_path(source.checkpoint_name)],
                    }
                ],
            },
            "docker_server": {
                "start_command": "vllm serve /tmp/training_checkpoints --port 8000",
                "server_port": 8000,
                "predict_endpoint": "/v1/chat/completions",
                "readiness_endpoint": "/health",
                "liveness_endpoint": "/health",
            },
        }
    )


def _checkpoint_path(name: str) -> str:
    """Where a checkpoint's files are under the job's checkpoint root (``.``: the root)."""
    return "rank-0/" if name == api.ROOT_CHECKPOINT else f"rank-0/{name}/"


def _refuse_unsynced(state: ServiceState, job: JobRow, name: str) -> None:
    """Baseten serves a checkpoint from storage: not while the ended job's final sync
    runs, nor one whose files are still syncing (baseten mode's ``checkpoint_sync_s``)."""
    if state.checkpoint_sync_status(job) == api.CHECKPOINT_SYNCING and job.status.is_terminal:
        raise GraphQLFailure(
            f"the checkpoints of training job {job.id} are still syncing to storage"
        )
    synced_before = state.synced_before(job)
    if synced_before is None:
        return
    root = state.home.job_dir(job.id) / "checkpoints"
    synced = checkpoints.scan(job.id, root, include_outputs=True, synced_before=synced_before)
    written = checkpoints.scan(job.id, root, include_outputs=True)
    size = {c.name: c.size_bytes for c in written}.get(name)
    if size is not None and size != {c.name: c.size_bytes for c in synced}.get(name):
        raise GraphQLFailure(
            f"checkpoint {name!r} of training job {job.id} is still syncing to storage"
        )


router = APIRouter()


def _deploy_version(state: ServiceState, request: InferenceTemplateRequest) -> dict[str, Any]:
    instance = next((i for i in INSTANCES if i["id"] == request.instance_type_id), None)
    if instance is None:
        raise GraphQLFailure(f"instance type {request.instance_type_id!r} does not exist")
    if instance["nodeCount"] != 1 or not instance["gpuCount"]:
        raise GraphQLFailure("vLLM deployments need a single-node GPU instance type")
    source = request.weights_sources[0].b10_training_checkpoint_weights_source.checkpoint
    job = state.store.job(source.training_job_id)
    if job is None:
        raise GraphQLFailure(
            f"training job {source.training_job_id} not found", "RESOURCE_NOT_FOUND"
        )
    known = SecretStore(state.home).names()
    for var in request.inference_stack.environment_variables:
        if var.is_secret_reference and var.value not in known:
            raise GraphQLFailure(f"secret {var.value!r} does not exist", "RESOURCE_NOT_FOUND")
    truss_config = _truss_config(request, instance)
    _refuse_unsynced(state, job, source.checkpoint_name)
    if request.dry_run:
        deploy.resolve_checkpoint(state.home, job, source.checkpoint_name)
        return {"model_version": None, "truss_config": truss_config}
    row = deploy.start(
        state.home,
        state.store,
        job,
        source.checkpoint_name,
        request.metadata.oracle_name,
        None,
        None,
    )
    name = request.metadata.oracle_name
    version = {"id": row.id, "name": name, "model_id": model_id(name)}
    return {"model_version": version, "truss_config": truss_config}


def _answer(state: ServiceState, body: dict[str, Any]) -> dict[str, Any]:
    query = str(body.get("query", ""))
    if "create_model_version_from_inference_template" in query:
        raw = (body.get("variables") or {}).get("request")
        try:
            request = InferenceTemplateRequest.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors()
            )
            raise GraphQLFailure(f"invalid request: {problems}") from None
        try:
            result = _deploy_version(state, request)
        except deploy.DeployRefused as exc:
            raise GraphQLFailure(str(exc)) from None
        return {"create_model_version_from_inference_template": result}
    if "listed_instances" in query:
        return {"listedInstances": INSTANCES}
    if "teams" in query:
        return {"teams": teams()}
    raise GraphQLFailure("this stand-in answers only the operations of Baseten's CLI")


@router.post("/graphql/")
async def graphql(request: Request, state: State) -> JSONResponse:
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise GraphQLFailure("the body must be a JSON object with a query")
        data = await blocking(_answer, state, body)
    except (GraphQLFailure, ValueError) as exc:
        code = getattr(exc, "code", "BAD_REQUEST")
        return JSONResponse(
            {"data": None, "errors": [{"message": str(exc), "extensions": {"code": code}}]}
        )
    return JSONResponse({"data": data})


def _version(state: ServiceState, model: str, deployment_id: str) -> DeploymentRow:
    row = state.store.deployment(deployment_id)
    if row is None or model_id(row.name) != model:
        raise HttpError(404, "NOT_FOUND", f"no deployment {deployment_id} of model {model}")
    settled: DeploymentRow = deploy.settle(state.store, row)
    return settled


def _wire(row: DeploymentRow) -> serving_api.ModelDeploymentV1:
    return serving_api.ModelDeploymentV1(
        id=row.id,
        created_at=utc(row.created_at),
        name=row.name,
        model_id=model_id(row.name),
        status=STATUS.get(row.status, row.status),
        active_replica_count=1 if row.status == "ACTIVE" else 0,
    )


@router.get("/v1/models/{model}/deployments/{deployment_id}")
async def get_deployment(model: str, deployment_id: str, state: State) -> JSONResponse:
    return JSONResponse(_wire(_version(state, model, deployment_id)).model_dump(mode="json"))


@router.post("/v1/models/{model}/deployments/{deployment_id}/deactivate")
async def deactivate(model: str, deployment_id: str, state: State) -> JSONResponse:
    deploy.stop(state.store, _version(state, model, deployment_id))
    return JSONResponse({"success": True})


@router.post("/v1/models/{model}/deployments/{deployment_id}/logs")
async def logs(model: str, deployment_id: str, state: State) -> JSONResponse:
    row = _version(state, model, deployment_id)
    rows = await blocking(state.store.logs_after, row.id, 0, 5000)
    newest_first = [log_json(r) for r in reversed(rows)]
    return JSONResponse({"logs": newest_first})


@router.post("/v1/local/model_gateway/model-{model}/deployment/{deployment_id}/{path:path}")
async def gateway(
    model: str, deployment_id: str, path: str, request: Request, state: State
) -> Response:
    row = _version(state, model, deployment_id)
    target = "/" + path.removeprefix("sync/")
    async with httpx.AsyncClient(timeout=300) as http:
        try:
            answer = await http.post(
                f"http://127.0.0.1:{row.port}{target}",
                content=await request.body(),
                headers={
                    "content-type": request.headers.get("content-type", ""),
                    # the deployment's port checks the key too (the gateway checked it)
                    "authorization": f"Api-Key {state.api_key}",
                },
            )
        except httpx.HTTPError:
            return JSONResponse(
                {"message": f"deployment {deployment_id} is {STATUS[row.status]}"}, 503
            )
    return Response(answer.content, answer.status_code, media_type="application/json")
