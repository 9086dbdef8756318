"""The local service's HTTP API: Baseten's training REST API, answered on this machine.

Paths and JSON follow ``baseten-training-openapi.json``; bodies are parsed with the models
of :mod:`bt_jupyter.api`. Errors are JSON ``{"code": ..., "message": ...}`` whose message
names what was wrong; nothing is created by a request that fails. Extensions that Baseten
has no equivalent for live under ``/v1/local/``.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import hmac
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bt_jupyter import api, spec
from bt_jupyter._version import __version__
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.local import checkpoints, deploy, models_api, s3_api
from bt_jupyter.local.dispatch import Dispatcher
from bt_jupyter.local.home import Home
from bt_jupyter.local.settings import Settings, s3_client
from bt_jupyter.local.store import DeploymentRow, JobRow, ProjectRow, Store, new_id
from bt_jupyter.local.uploads import save_stream, too_large
from bt_jupyter.local.wire import ApiError, blocking, log_wire, not_found, ok, utc

M = TypeVar("M", bound=BaseModel)
S = spec.TrainingJobStatus
FOLLOW_POLL_SECONDS = 0.02
#: What a queued job says (Baseten's PENDING/QUEUED jobs carry such advice).
QUEUE_ADVICE = "Waiting for capacity; the job starts when GPUs of its type are free."
#: In baseten mode every LATE_EVERY-th log line reaches the log API late.
LATE_EVERY = 3


class Service:
    """The state behind the routes: store, home, settings and the runner dispatcher."""

    def __init__(self, home: Home, settings: Settings, dispatcher: Dispatcher) -> None:
        self.home, self.settings, self.dispatcher = home, settings, dispatcher
        self.store = Store(home.db)
        self.api_key = home.api_key()
        #: Access key ids of the blob credentials handed out (the S3 stand-in takes only these)
        self.issued_access_keys: set[str] = set()
        #: Who creates jobs here; Baseten always names the user (truss's CLI expects one).
        self.user = api.UserV1(email=f"{getpass.getuser()}@localhost")

    # ------------------------------------------------------------------ lookups

    def project(self, project_id: str) -> ProjectRow:
        found = self.store.project(project_id)
        if found is None:
            raise not_found("training project", project_id)
        return found

    def job(self, project_id: str, job_id: str) -> tuple[ProjectRow, JobRow]:
        project = self.project(project_id)
        job = self.store.job(job_id)
        if job is None or job.project_id != project.id:
            raise not_found(f"training job in project {project_id}", job_id)
        return project, job

    # ------------------------------------------------------------------ wire shapes

    def job_wire(self, job: JobRow, project: ProjectRow | None = None) -> api.TrainingJobV1:
        project = project or self.project(job.project_id)
        compute = job.spec.get("compute") or {}
        return api.TrainingJobV1(
            id=job.id,
            created_at=utc(job.created_at),
            current_status=job.status.value,
            error_message=job.error_message,
            instance_type=_instance_type(compute),
            node_count=job.node_count,
            updated_at=utc(job.updated_at),
            training_project_id=project.id,
            training_project=api.TrainingProjectSummaryV1(id=project.id, name=project.name),
            name=job.name,
            checkpoint_sync_status=self.checkpoint_sync_status(job),
            priority=job.priority,
            availability_model=compute.get("availability_model", "dedicated"),
            user=self.user,
        )

    def checkpoint_sync_status(self, job: JobRow) -> str | None:
        """SYNCING while the job runs and for ``checkpoint_sync_s`` after it ended (the
        last files written are then in storage); None without checkpointing."""
        runtime = job.spec.get("runtime") or {}
        if not (runtime.get("checkpointing_config") or {}).get("enabled"):
            return None
        if not job.status.is_terminal:
            return api.CHECKPOINT_SYNCING
        if time.time() - job.updated_at < self.settings.checkpoint_sync_s:
            return api.CHECKPOINT_SYNCING
        return api.CHECKPOINT_SYNCED

    def synced_before(self, job: JobRow) -> float | None:
        """Files written after this are not in (the stand-in's) storage yet: while the job
        runs, those of the last ``checkpoint_sync_s``; after it ended, until its final
        sync is done, also at least the last file written (its ``--out`` values)."""
        delay = self.settings.checkpoint_sync_s
        if delay <= 0:
            return None
        now = time.time()
        if not job.status.is_terminal:
            return now - delay
        if now - job.updated_at >= delay:
            return None  # the final sync is done
        root = self.home.job_dir(job.id) / "checkpoints"
        newest = max((p.stat().st_mtime for _, _, p in checkpoints.files(root)), default=0.0)
        return min(job.updated_at - delay, newest - 1e-3)

    def create_job(
        self, project: ProjectRow, spec_json: dict[str, Any], idempotency_key: str | None
    ) -> tuple[JobRow, bool]:
        """Create and start a job. In baseten mode it first waits in the queue (QUEUED,
        with queue advice as its message, like Baseten's) for ``queue_s`` seconds."""
        if self.settings.baseten_mode and self.settings.queue_s > 0:
            job, created = self.store.create_job(
                project.id, spec_json, idempotency_key, S.QUEUED, QUEUE_ADVICE
            )
            if created:
                timer = threading.Timer(self.settings.queue_s, self.dequeue, (job.id,))
                timer.daemon = True
                timer.start()
            return job, created
        job, created = self.store.create_job(project.id, spec_json, idempotency_key)
        if created:
            self.dispatcher.dispatch(job.id)
        return job, created

    def dequeue(self, job_id: str) -> None:
        """QUEUED -> CREATED, then run it (not if it was stopped while queued)."""
        if self.store.set_status(job_id, S.CREATED):
            self.dispatcher.dispatch(job_id)

    def project_wire(self, project: ProjectRow) -> api.TrainingProjectV1:
        latest = self.store.latest_job(project.id)
        return api.TrainingProjectV1(
            id=project.id,
            name=project.name,
            created_at=utc(project.created_at),
            updated_at=utc(project.updated_at),
            team_name=project.team_name,
            latest_job=self.job_wire(latest, project) if latest else None,
        )

    def sign(self, path: str) -> str:
        return hmac.new(self.api_key.encode(), path.encode(), hashlib.sha256).hexdigest()

    def signed_url(self, request: Request, path: str) -> str:
        return f"{str(request.base_url).rstrip('/')}{path}?sig={self.sign(path)}"


def _instance_type(compute: dict[str, Any]) -> api.InstanceTypeV1:
    accelerator = compute.get("accelerator") or {}
    gpu_type, gpu_count = accelerator.get("accelerator"), int(accelerator.get("count") or 0)
    name = f"{gpu_type}:{gpu_count}" if gpu_type else f"CPU:{compute.get('cpu_count', 1)}"
    return api.InstanceTypeV1(
        id=f"local-{name}",
        name=name,
        memory_limit_mib=_mib(str(compute.get("memory", "2Gi"))),
        millicpu_limit=int(compute.get("cpu_count", 1)) * 1000,
        gpu_count=gpu_count,
        gpu_type=gpu_type,
        gpu_memory_limit_mib=None,
    )


def _mib(quantity: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "K": 1e3 / 2**20}
    units |= {"M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}
    for unit in sorted(units, key=len, reverse=True):
        if quantity.endswith(unit):
            return int(float(quantity[: -len(unit)]) * units[unit])
    return int(float(quantity) / 2**20)


async def _parse(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, "MALFORMED_JSON", f"request body is not valid JSON: {exc}") from None
    return _validate(model, data)


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except InvalidConfigError as exc:
        raise ApiError(422, "INVALID_REQUEST", str(exc)) from None
    except ValidationError as exc:
        raise ApiError(422, "INVALID_REQUEST", str(spec.invalid_config(model, exc))) from None


def build_app(service: Service) -> FastAPI:
    app = FastAPI(title="bt_jupyter local training service", version=__version__)
    # jobs queued when an earlier service ended: the dispatcher's watch starts them
    for queued in service.store.jobs(statuses=[S.QUEUED.value]):
        service.store.set_status(queued.id, S.CREATED)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "no such endpoint", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return JSONResponse({"code": "HTTP_ERROR", "message": message}, exc.status_code)

    async def authenticated(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() not in ("bearer", "api-key") or not hmac.compare_digest(
            key.strip(), service.api_key
        ):
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "missing or wrong API key: send 'Authorization: Bearer <key>' "
                f"with the key in {service.home.api_key_file}",
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authenticated)])
    run = blocking

    # ------------------------------------------------------------------ projects

    async def upsert(request: Request, team: str | None) -> JSONResponse:
        body = await _parse(request, api.UpsertTrainingProjectRequestV1)
        project = await run(
            service.store.upsert_project,
            body.training_project.name,
            team or body.training_project.team_name,
        )
        return ok(
            api.UpsertTrainingProjectResponseV1(training_project=service.project_wire(project))
        )

    @v1.post("/training_projects")
    async def upsert_project(request: Request) -> JSONResponse:
        return await upsert(request, None)

    @v1.post("/teams/{team_id}/training_projects")
    async def upsert_team_project(team_id: str, request: Request) -> JSONResponse:
        return await upsert(request, team_id)

    @v1.get("/training_projects")
    async def list_projects() -> JSONResponse:
        projects = await run(service.store.projects)
        return ok(
            api.ListTrainingProjectsResponseV1(
                training_projects=[service.project_wire(p) for p in projects]
            )
        )

    @v1.get("/training_projects/{project_id}")
    async def get_project(project_id: str) -> JSONResponse:
        project = service.project(project_id)
        return ok(api.GetTrainingProjectResponseV1(training_project=service.project_wire(project)))

    @v1.delete("/training_projects/{project_id}")
    async def delete_project(project_id: str) -> JSONResponse:
        project = service.project(project_id)
        live = [j.id for j in service.store.jobs(project_id=project.id) if not j.status.is_terminal]
        if live:
            raise ApiError(
                409,
                "CONFLICT",
                f"project {project.name!r} has running jobs {live}; stop them first",
            )
        for job in service.store.jobs(project_id=project.id):
            shutil.rmtree(service.home.job_dir(job.id), ignore_errors=True)
        await run(service.store.delete_project, project.id)
        return ok(api.TrainingProjectTombstoneV1(id=project.id, deleted=True))

    # ------------------------------------------------------------------ jobs

    @v1.post("/training_projects/{project_id}/jobs")
    async def create_job(project_id: str, request: Request) -> JSONResponse:
        project = service.project(project_id)
        body = await _parse(request, api.CreateTrainingJobRequestV1)
        for artifact in body.training_job.runtime.artifacts:
            if not await run(_artifact_exists, service, artifact):
                raise ApiError(
                    400,
                    "ARTIFACT_NOT_FOUND",
                    f"artifact s3://{artifact.s3_bucket}/{artifact.s3_key} was not uploaded to "
                    "this service; PUT it to /v1/local/artifacts/{key} first",
                )
        job, _ = await run(
            service.create_job,
            project,
            body.training_job.model_dump(mode="json"),
            request.headers.get("idempotency-key"),
        )
        return ok(api.CreateTrainingJobResponseV1(training_job=service.job_wire(job, project)))

    @v1.get("/training_projects/{project_id}/jobs")
    async def list_jobs(project_id: str) -> JSONResponse:
        project = service.project(project_id)
        jobs = await run(service.store.jobs, project.id)
        return ok(
            api.ListTrainingJobsResponseV1(
                training_project=service.project_wire(project),
                training_jobs=[service.job_wire(j, project) for j in jobs],
            )
        )

    @v1.get("/training_projects/{project_id}/jobs/{job_id}")
    async def get_job(project_id: str, job_id: str) -> JSONResponse:
        project, job = service.job(project_id, job_id)
        return ok(
            api.GetTrainingJobResponseV1(
                training_project=service.project_wire(project),
                training_job=service.job_wire(job, project),
            )
        )

    @v1.patch("/training_projects/{project_id}/jobs/{job_id}")
    async def update_job(project_id: str, job_id: str, request: Request) -> JSONResponse:
        project, job = service.job(project_id, job_id)
        body = await _parse(request, api.UpdateTrainingJobRequestV1)
        await run(service.store.set_priority, job.id, body.priority)
        job = service.job(project_id, job_id)[1]
        return ok(api.UpdateTrainingJobResponseV1(training_job=service.job_wire(job, project)))

    @v1.delete("/training_projects/{project_id}/jobs/{job_id}")
    async def delete_job(project_id: str, job_id: str) -> JSONResponse:
        project, job = service.job(project_id, job_id)
        if not job.status.is_terminal:
            raise ApiError(409, "CONFLICT", f"job {job.id} is {job.status.short}; stop it first")
        shutil.rmtree(service.home.job_dir(job.id), ignore_errors=True)
        await run(service.store.delete_job, job.id)
        return ok(
            api.TrainingJobTombstoneV1(id=job.id, deleted=True, training_project_id=project.id)
        )

    @v1.post("/training_projects/{project_id}/jobs/{job_id}/stop")
    async def stop_job(project_id: str, job_id: str, request: Request) -> JSONResponse:
        project, job = service.job(project_id, job_id)
        await _parse(request, api.StopTrainingJobRequestV1)
        if not job.status.is_terminal:
            await run(service.dispatcher.stop, job)
        job = service.job(project_id, job_id)[1]
        return ok(api.StopTrainingJobResponseV1(training_job=service.job_wire(job, project)))

    @v1.post("/training_projects/{project_id}/jobs/{job_id}/recreate")
    async def recreate_job(project_id: str, job_id: str) -> JSONResponse:
        project, job = service.job(project_id, job_id)
        new, _ = await run(service.create_job, project, job.spec, None)
        return ok(api.RecreateTrainingJobResponseV1(training_job=service.job_wire(new, project)))

    @v1.post("/training_jobs/search")
    async def search_jobs(request: Request) -> JSONResponse:
        body = await _parse(request, api.SearchTrainingJobsRequestV1)
        order = (
            body.order_by[0] if body.order_by else api.OrderByV1(field="created_at", order="desc")
        )
        statuses = [S.parse(s).value for s in body.statuses or []] if body.statuses else None
        jobs = await run(
            service.store.jobs, body.project_id, body.job_id, statuses, order.order, order.field
        )
        return ok(
            api.SearchTrainingJobsResponseV1(training_jobs=[service.job_wire(j) for j in jobs])
        )

    # ------------------------------------------------------------------ logs

    async def logs(
        project_id: str, job_id: str, query: api.GetTrainingJobLogsRequestV1
    ) -> JSONResponse:
        _, job = service.job(project_id, job_id)
        start, end = _log_window(query)
        late_s = service.settings.log_late_s if service.settings.baseten_mode else 0.0
        rows = await run(
            service.store.logs,
            job.id,
            start * 1_000_000,
            (end + 1) * 1_000_000 - 1,
            query.direction != api.SortOrderV1.ASC,  # newest first unless asked, as on Baseten
            query.limit or 500,
            query.min_level.value if query.min_level else None,
            LATE_EVERY if late_s > 0 else 0,
            time.time_ns() - int(late_s * 1e9),
        )
        return ok(api.GetLogsResponseV1(logs=[log_wire(r) for r in rows]))

    @v1.get("/training_projects/{project_id}/jobs/{job_id}/logs")
    async def get_logs(project_id: str, job_id: str, request: Request) -> JSONResponse:
        return await logs(project_id, job_id, _query(request, api.GetTrainingJobLogsRequestV1))

    @v1.post("/training_projects/{project_id}/jobs/{job_id}/logs")
    async def post_logs(project_id: str, job_id: str, request: Request) -> JSONResponse:
        return await logs(
            project_id, job_id, await _parse(request, api.GetTrainingJobLogsRequestV1)
        )

    # ------------------------------------------------------------------ metrics

    async def metrics(
        project_id: str, job_id: str, query: api.GetTrainingJobMetricsRequestV1
    ) -> JSONResponse:
        project, job = service.job(project_id, job_id)
        start = query.start_epoch_millis / 1000 if query.start_epoch_millis is not None else None
        end = query.end_epoch_millis / 1000 if query.end_epoch_millis is not None else None
        rows = await run(service.store.metrics, job.id, start, end)
        per_node = []
        for rank in range(job.node_count):
            series = [r for r in rows if r.node == rank]
            per_node.append(
                api.TrainingJobNodeMetricsV1(node_id=str(rank), metrics=_node_metrics(series))
            )
        leader = per_node[0].metrics if per_node else api.TrainingJobMetricsV1()
        cache = None
        if ((job.spec.get("runtime") or {}).get("cache_config") or {}).get("enabled"):
            size = _tree_size(service.home.project_cache(project.id))
            point = api.TrainingJobMetricV1(value=size, timestamp=utc(time.time()))
            cache = api.StorageMetricsV1(usage_bytes=[point], utilization=[])
        return ok(
            api.GetTrainingJobMetricsResponseV1(
                **leader.model_dump(),
                training_job=service.job_wire(job, project),
                cache=cache,
                per_node_metrics=per_node,
            )
        )

    @v1.get("/training_projects/{project_id}/jobs/{job_id}/metrics")
    async def get_metrics(project_id: str, job_id: str, request: Request) -> JSONResponse:
        query = _query(request, api.GetTrainingJobMetricsRequestV1)
        return await metrics(project_id, job_id, query)

    @v1.post("/training_projects/{project_id}/jobs/{job_id}/metrics")
    async def post_metrics(project_id: str, job_id: str, request: Request) -> JSONResponse:
        return await metrics(
            project_id, job_id, await _parse(request, api.GetTrainingJobMetricsRequestV1)
        )

    # ------------------------------------------------------------------ checkpoints

    @v1.get("/training_projects/{project_id}/jobs/{job_id}/checkpoints")
    async def get_checkpoints(project_id: str, job_id: str) -> JSONResponse:
        """Baseten lists every top-level folder (bt_jupyter's ``--out`` folder too: it
        does not know it) and ``.`` for files at the root; the local backend leaves the
        ``--out`` folder out. In baseten mode only synced files count."""
        project, job = service.job(project_id, job_id)
        root = service.home.job_dir(job.id) / "checkpoints"
        baseten = service.settings.baseten_mode
        synced_before = await run(service.synced_before, job)
        found = await run(
            lambda: checkpoints.scan(
                job.id, root, include_outputs=baseten, synced_before=synced_before
            )
        )
        written = {c.name: c.size_bytes for c in found}
        if synced_before is not None and found:
            written = {
                c.name: c.size_bytes
                for c in await run(lambda: checkpoints.scan(job.id, root, include_outputs=True))
            }
        if found:
            await run(service.store.save_checkpoints, job.id, found)
        rows = found or [
            c
            for c in await run(service.store.checkpoints, job.id)
            if baseten or checkpoints.is_model_checkpoint(c.name)
        ]
        job_synced = service.checkpoint_sync_status(job) != api.CHECKPOINT_SYNCING

        def sync_status(row: Any) -> str:
            """In storage: the job's sync is done, or (baseten mode) all its files are."""
            if job_synced or (baseten and written.get(row.name) == row.size_bytes):
                return api.CHECKPOINT_SYNCED
            return api.CHECKPOINT_SYNCING

        return ok(
            api.GetTrainingJobCheckpointsResponseV1(
                training_job=service.job_wire(job, project),
                checkpoints=[
                    api.TrainingJobCheckpointV1(
                        checkpoint_id=c.name,
                        created_at=utc(c.created_at),
                        checkpoint_type=c.checkpoint_type,
                        base_model=c.base_model,
                        lora_adapter_config=c.lora_adapter_config,
                        size_bytes=c.size_bytes,
                        sync_status=sync_status(c),
                        training_job_id=job.id,
                    )
                    for c in rows
                ],
            )
        )

    @v1.get("/training_projects/{project_id}/jobs/{job_id}/checkpoint_files")
    async def get_checkpoint_files(project_id: str, job_id: str, request: Request) -> JSONResponse:
        _, job = service.job(project_id, job_id)
        page_size = _int_param(request, "page_size", 1000, 1, None)
        offset = _int_param(request, "page_token", 0, 0, None)
        found = await run(
            checkpoints.files,
            service.home.job_dir(job.id) / "checkpoints",
            await run(service.synced_before, job),
        )
        page = found[offset : offset + page_size]
        urls = []
        for rank, relative, path in page:
            stat = path.stat()
            urls.append(
                api.CheckpointFile(
                    url=service.signed_url(
                        request, f"/v1/local/checkpoint_files/{job.id}/{relative}"
                    ),
                    relative_file_name=relative,
                    node_rank=rank,
                    size_bytes=stat.st_size,
                    last_modified=utc(stat.st_mtime).isoformat(),
                )
            )
        more = offset + page_size < len(found)
        return ok(
            api.GetTrainingJobCheckpointFilesResponseV1(
                presigned_urls=urls,
                next_page_token=offset + page_size if more else None,
                total_count=len(found),
            )
        )

    @v1.get("/training_projects/{project_id}/jobs/{job_id}/download")
    async def download_job(project_id: str, job_id: str, request: Request) -> JSONResponse:
        _, job = service.job(project_id, job_id)
        artifacts = (job.spec.get("runtime") or {}).get("artifacts") or []
        return ok(
            api.DownloadTrainingJobResponseV1(
                artifact_presigned_urls=[
                    await run(_artifact_url, service, request, a) for a in artifacts
                ]
            )
        )

    @v1.get("/training_projects/{project_id}/cache/summary")
    async def cache_summary(project_id: str) -> JSONResponse:
        project = service.project(project_id)
        root = service.home.project_cache(project.id)
        summaries = await run(_file_summaries, root)
        return ok(
            api.GetCacheSummaryResponseV1(
                timestamp=utc(time.time()).isoformat(),
                project_id=project.id,
                file_summaries=summaries,
            )
        )

    @v1.get("/training_projects/{project_id}/jobs/{job_id}/auth_codes")
    async def auth_codes(project_id: str, job_id: str) -> JSONResponse:
        """No interactive sessions here (``truss train logs`` asks before printing)."""
        service.job(project_id, job_id)
        return ok(api.GetAuthCodesResponseV1(auth_codes=[]))

    @v1.get("/blobs/credentials/train")
    async def blob_credentials(request: Request) -> JSONResponse:
        """A bucket and key to upload a bundle to, with throwaway credentials: the
        service's S3-compatible bucket in baseten mode, else its own S3 stand-in, named
        in ``creds.endpoint_url`` (truss hands ``creds`` to boto3 as they are)."""
        access_key = f"LOCAL{new_id(12).upper()}"
        service.issued_access_keys.add(access_key)
        endpoint = None
        if not service.settings.s3_bucket:
            port = request.url.port or 80  # an IP, so boto3 addresses the bucket by path
            endpoint = f"http://127.0.0.1:{port}{s3_api.PREFIX}"
        answer = api.GetBlobCredentialsResponseV1(
            creds=api.AWSCredentialsV1(
                aws_access_key_id=access_key,
                aws_secret_access_key=new_id(32),
                aws_session_token=new_id(32),
                endpoint_url=endpoint,
            ),
            s3_key=f"training/{new_id(16)}/bundle.tar",
            s3_bucket=service.settings.s3_bucket or api.LOCAL_ARTIFACT_BUCKET,
        )
        return JSONResponse(answer.model_dump(mode="json", exclude_none=True))

    # ------------------------------------------------------------------ local extensions

    local = APIRouter(prefix="/v1/local")

    @local.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__, "pid": os.getpid()})

    @local.put("/artifacts/{key}", dependencies=[Depends(authenticated)])
    async def put_artifact(key: str, request: Request) -> JSONResponse:
        path = _artifact_path(service, key)
        limit = service.settings.max_artifact_bytes
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise ApiError(413, "TOO_LARGE", too_large(declared, limit))
        digest = key.split(".", 1)[0]
        received = await save_stream(
            request.stream(), path, limit, digest if len(digest) == 64 else None
        )
        return JSONResponse(
            {"s3_bucket": api.LOCAL_ARTIFACT_BUCKET, "s3_key": key, "size_bytes": received.size}
        )

    @local.head("/artifacts/{key}", dependencies=[Depends(authenticated)])
    async def head_artifact(key: str) -> Response:
        path = _artifact_path(service, key)
        if not path.is_file():
            return Response(status_code=404)
        return Response(headers={"content-length": str(path.stat().st_size)})

    @local.get("/artifacts/{key}")
    async def get_artifact(key: str, request: Request) -> FileResponse:
        _check_signature(service, request)
        path = _artifact_path(service, key)
        if not path.is_file():
            raise ApiError(404, "NOT_FOUND", f"no artifact {key}")
        return FileResponse(path)

    @local.get("/checkpoint_files/{job_id}/{relative:path}")
    async def get_checkpoint_file(job_id: str, relative: str, request: Request) -> FileResponse:
        _check_signature(service, request)
        root = (service.home.job_dir(job_id) / "checkpoints").resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ApiError(404, "NOT_FOUND", f"no checkpoint file {relative} in job {job_id}")
        return FileResponse(path)

    @local.get(
        "/training_projects/{project_id}/jobs/{job_id}/logs/follow",
        dependencies=[Depends(authenticated)],
    )
    async def follow_logs(project_id: str, job_id: str, request: Request) -> JSONResponse:
        """Long-poll: lines after ``cursor`` as soon as there are any (or ``timeout``).

        The cursor is the store's append order, so reconnecting with the last cursor
        gives no duplicates and no gaps. ``done`` is true once the job is terminal and
        every line has been returned. With ``tail=N`` (a view that shows recent lines,
        such as the widget) only the newest N lines come back, plus the older ones that
        start with ``keep_prefix``, and ``skipped`` counts the rest.
        """
        _, job = service.job(project_id, job_id)
        cursor = _int_param(request, "cursor", 0, 0, None)
        limit = _int_param(request, "limit", 1000, 1, 5000)
        tail = _int_param(request, "tail", 0, 0, 5000)
        keep_prefix = request.query_params.get("keep_prefix", "")
        timeout = _int_param(request, "timeout", 20, 0, 60)
        deadline = time.monotonic() + timeout
        skipped = 0
        while True:
            # one row read per poll (this loop runs every 20 ms for every follower)
            current = await run(service.store.job, job.id) or job
            terminal = current.status.is_terminal
            if tail:
                rows, skipped = await run(
                    service.store.logs_tail_after, job.id, cursor, tail, keep_prefix
                )
            else:
                rows = await run(service.store.logs_after, job.id, cursor, limit)
            if rows or terminal or time.monotonic() >= deadline or await request.is_disconnected():
                break
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        next_cursor = rows[-1].id if rows else cursor
        return JSONResponse(
            {
                "logs": [  # plain dicts: this path carries every line of every job
                    {
                        "timestamp": str(r.ts_ns),
                        "message": r.message,
                        "replica": str(r.node) if r.node is not None else None,
                        "request_id": None,
                        "level": r.level,
                        "cursor": r.id,
                    }
                    for r in rows
                ],
                "cursor": next_cursor,
                "skipped": skipped,
                "status": current.status.value,
                "done": terminal and (bool(tail) or len(rows) < limit),
            }
        )

    @local.get(
        "/training_projects/{project_id}/jobs/{job_id}/history",
        dependencies=[Depends(authenticated)],
    )
    async def job_history(project_id: str, job_id: str) -> JSONResponse:
        """Every status the job reached, with when: the widget's lifecycle stepper."""
        _, job = service.job(project_id, job_id)
        history = await run(service.store.history, job.id)
        return JSONResponse(
            {"history": [{"status": s.value, "at": utc(at).isoformat()} for s, at in history]}
        )

    # ------------------------------------------------------------------ deployments

    def deployment_wire(row: DeploymentRow) -> api.LocalDeploymentV1:
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

    def find_deployment(deployment_id: str) -> DeploymentRow:
        row = service.store.deployment(deployment_id)
        if row is None:
            raise not_found("deployment", deployment_id)
        return deploy.settle(service.store, row)

    @local.post("/deployments", dependencies=[Depends(authenticated)])
    async def create_deployment(request: Request) -> JSONResponse:
        body = await _parse(request, api.LocalCreateDeploymentRequestV1)
        job = service.store.job(body.job_id)
        if job is None:
            raise not_found("training job", body.job_id)
        bundle = None
        if body.model_artifact is not None:
            bundle = _artifact_path(service, body.model_artifact.s3_key)
            if not bundle.is_file():
                raise ApiError(
                    400,
                    "ARTIFACT_NOT_FOUND",
                    f"model bundle {body.model_artifact.s3_key} was not uploaded",
                )
        try:
            row = await run(
                deploy.start,
                service.home,
                service.store,
                job,
                body.checkpoint,
                body.name,
                bundle,
                body.port,
            )
        except deploy.DeployRefused as exc:
            raise ApiError(exc.status, "DEPLOY_REFUSED", str(exc)) from None
        return ok(deployment_wire(row))

    @local.get("/deployments", dependencies=[Depends(authenticated)])
    async def list_deployments() -> JSONResponse:
        rows = [deploy.settle(service.store, r) for r in service.store.deployments()]
        return ok(
            api.LocalListDeploymentsResponseV1(deployments=[deployment_wire(r) for r in rows])
        )

    @local.get("/deployments/{deployment_id}", dependencies=[Depends(authenticated)])
    async def get_deployment(deployment_id: str) -> JSONResponse:
        return ok(deployment_wire(find_deployment(deployment_id)))

    @local.post("/deployments/{deployment_id}/stop", dependencies=[Depends(authenticated)])
    async def stop_deployment(deployment_id: str) -> JSONResponse:
        row = find_deployment(deployment_id)
        deploy.stop(service.store, row)
        return ok(deployment_wire(find_deployment(deployment_id)))

    @local.get("/deployments/{deployment_id}/logs", dependencies=[Depends(authenticated)])
    async def deployment_logs(deployment_id: str) -> JSONResponse:
        row = find_deployment(deployment_id)
        rows = await run(service.store.logs_after, row.id, 0, 5000)
        return ok(api.GetLogsResponseV1(logs=[log_wire(r) for r in rows]))

    app.include_router(v1)
    app.include_router(local)
    app.include_router(models_api.build_router(service, authenticated))
    app.include_router(s3_api.build_router(service))
    return app


# --------------------------------------------------------------------------- helpers


def _artifact_path(service: Service, key: str) -> Path:
    path = service.home.artifact_file(key)
    if path is None:
        raise ApiError(400, "INVALID_KEY", f"artifact key {key!r} is not a valid object key")
    return path


def _artifact_exists(service: Service, artifact: api.CreateTrainingJobS3Artifact) -> bool:
    if artifact.s3_bucket == api.LOCAL_ARTIFACT_BUCKET:
        return _artifact_path(service, artifact.s3_key).is_file()
    if not service.settings.s3_bucket or artifact.s3_bucket != service.settings.s3_bucket:
        return False
    try:
        s3_client(service.settings).head_object(  # type: ignore[attr-defined]
            Bucket=artifact.s3_bucket, Key=artifact.s3_key
        )
    except Exception:
        return False
    return True


def _artifact_url(service: Service, request: Request, artifact: dict[str, str]) -> str:
    """A presigned URL of a job's bundle: S3's own for one in the service's bucket
    (baseten mode, as Baseten answers), else the local artifact store's."""
    bucket, key = artifact.get("s3_bucket"), artifact["s3_key"]
    if service.settings.s3_bucket and bucket == service.settings.s3_bucket:
        url: str = s3_client(service.settings).generate_presigned_url(  # type: ignore[attr-defined]
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600
        )
        return url
    return service.signed_url(request, f"/v1/local/artifacts/{key}")


def _check_signature(service: Service, request: Request) -> None:
    """A presigned URL carries its own signature. Like S3, the baseten-mode stand-in
    refuses a request that also sends an Authorization header (even an empty one)."""
    if service.settings.baseten_mode and "authorization" in request.headers:
        raise ApiError(
            403,
            "FORBIDDEN",
            "a presigned URL takes no Authorization header: its signature is in the URL",
        )
    expected = service.sign(request.url.path)
    if not hmac.compare_digest(request.query_params.get("sig", ""), expected):
        raise ApiError(403, "FORBIDDEN", "missing or invalid signature on this download URL")


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
        raise ApiError(
            400,
            "INVALID_REQUEST",
            f"start_epoch_millis ({start}) is after end_epoch_millis ({end})",
        )
    if end - start > api.MAX_LOG_WINDOW_MS:
        raise ApiError(
            400,
            "INVALID_REQUEST",
            "the window from start_epoch_millis to end_epoch_millis must not exceed 7 days "
            f"(asked for {(end - start) / 86_400_000:.1f} days)",
        )
    return start, end


def _query(request: Request, model: type[M]) -> M:
    """The query parameters ``model`` defines, validated (others are ignored, as HTTP APIs do)."""
    known = {k: v for k, v in request.query_params.items() if k in model.model_fields}
    return _validate(model, known)


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, "INVALID_REQUEST", f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ApiError(422, "INVALID_REQUEST", f"{name} must be {bound}, got {value}")
    return value


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


def _file_summaries(root: Path) -> list[api.FileSummary]:
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        found.append(
            api.FileSummary(
                path=path.relative_to(root).as_posix(),
                size_bytes=stat.st_size,
                modified=utc(stat.st_mtime).isoformat(),
                file_type="directory" if path.is_dir() else "file",
                permissions=oct(stat.st_mode & 0o777)[2:],
            )
        )
    return found
