"""A job's checkpoints and their files, and a project's cache: Baseten's listings, plus
the presigned download of one checkpoint file that those listings hand out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from bt_jupyter import api, limits
from bt_jupyter.local import checkpoints, signatures
from bt_jupyter.local.state import State
from bt_jupyter.local.store import CheckpointRow
from bt_jupyter.local.wire import HttpError, int_param, ok, utc
from bt_jupyter.local.wire import blocking as run

router = APIRouter(prefix="/v1")
#: The largest page size or offset accepted (what any integer column could count to).
MAX_INT64 = 2**63 - 1
#: Reached by presigned URL: the signature in the URL, not an API key, lets a request in.
presigned = APIRouter(prefix="/v1/local")


@router.get("/training_projects/{project_id}/jobs/{job_id}/checkpoints")
async def get_checkpoints(project_id: str, job_id: str, state: State) -> JSONResponse:
    """Baseten lists every top-level folder (bt_jupyter's ``--out`` folder too: it
    does not know it) and ``.`` for files at the root; the local backend leaves the
    ``--out`` folder out. In baseten mode only synced files count."""
    project, job = state.job(project_id, job_id)
    root = state.home.job_dir(job.id) / "checkpoints"
    baseten = state.settings.baseten_mode
    synced_before = await run(state.synced_before, job)
    found = await run(
        lambda: checkpoints.scan(job.id, root, include_outputs=baseten, synced_before=synced_before)
    )
    written = {c.name: c.size_bytes for c in found}
    if synced_before is not None and found:
        written = {
            c.name: c.size_bytes
            for c in await run(lambda: checkpoints.scan(job.id, root, include_outputs=True))
        }
    if found:
        await run(state.store.save_checkpoints, job.id, found)
    rows = found or [
        c
        for c in await run(state.store.checkpoints, job.id)
        if baseten or checkpoints.is_model_checkpoint(c.name)
    ]
    job_synced = state.checkpoint_sync_status(job) != api.CHECKPOINT_SYNCING

    def sync_status(row: Any) -> str:
        """In storage: the job's sync is done, or (baseten mode) all its files are."""
        if job_synced or (baseten and written.get(row.name) == row.size_bytes):
            return api.CHECKPOINT_SYNCED
        return api.CHECKPOINT_SYNCING

    return ok(
        api.GetTrainingJobCheckpointsResponseV1(
            training_job=state.job_wire(job, project),
            checkpoints=[_checkpoint_wire(c, job.id, sync_status(c)) for c in rows],
        )
    )


def _checkpoint_wire(row: CheckpointRow, job_id: str, sync: str) -> api.TrainingJobCheckpointV1:
    return api.TrainingJobCheckpointV1(
        checkpoint_id=row.name,
        created_at=utc(row.created_at),
        checkpoint_type=row.checkpoint_type,
        base_model=row.base_model,
        lora_adapter_config=row.lora_adapter_config,
        size_bytes=row.size_bytes,
        sync_status=sync,
        training_job_id=job_id,
    )


@router.get("/training_projects/{project_id}/jobs/{job_id}/checkpoint_files")
async def get_checkpoint_files(
    project_id: str, job_id: str, request: Request, state: State
) -> JSONResponse:
    _, job = state.job(project_id, job_id)
    page_size = int_param(request, "page_size", 1000, 1, MAX_INT64)
    offset = int_param(request, "page_token", 0, 0, MAX_INT64)
    found = await run(
        checkpoints.files,
        state.home.job_dir(job.id) / "checkpoints",
        await run(state.synced_before, job),
    )
    page = found[offset : offset + page_size]
    urls = []
    for rank, relative, path in page:
        stat = path.stat()
        urls.append(
            api.CheckpointFile(
                url=signatures.signed_url(
                    request,
                    f"/v1/local/checkpoint_files/{job.id}/{relative}",
                    state.settings.url_ttl_s,
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


@router.get("/training_projects/{project_id}/cache/summary")
async def cache_summary(project_id: str, state: State) -> JSONResponse:
    project = state.project(project_id)
    root = state.home.project_cache(project.id)
    summaries = await run(_file_summaries, root)
    return ok(
        api.GetCacheSummaryResponseV1(
            timestamp=utc(time.time()).isoformat(),
            project_id=project.id,
            file_summaries=summaries,
        )
    )


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


@presigned.get("/checkpoint_files/{job_id}/{relative:path}")
async def get_checkpoint_file(
    job_id: str, relative: str, request: Request, state: State
) -> FileResponse:
    signatures.check_signature(request, state.settings.baseten_mode)
    root = (state.home.job_dir(job_id) / "checkpoints").resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HttpError(
            404,
            "NOT_FOUND",
            f"no checkpoint file {limits.shown(relative)} in job {limits.shown(job_id)}",
        )
    return FileResponse(path)
