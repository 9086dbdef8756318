"""Job bundles (artifacts): blob credentials to upload one, the local artifact store's
upload/check/download, and a job's presigned bundle URLs (Baseten's ``download``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from bt_jupyter import api
from bt_jupyter.local import signatures
from bt_jupyter.local.routes import s3_api
from bt_jupyter.local.settings import s3_client
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.store import new_id
from bt_jupyter.local.uploads import save_stream, too_large
from bt_jupyter.local.wire import HttpError, ok
from bt_jupyter.local.wire import blocking as run

router = APIRouter(prefix="/v1")
#: Reached by presigned URL: the signature in the URL, not an API key, lets a request in.
presigned = APIRouter(prefix="/v1/local")


@router.get("/training_projects/{project_id}/jobs/{job_id}/download")
async def download_job(
    project_id: str, job_id: str, request: Request, state: State
) -> JSONResponse:
    _, job = state.job(project_id, job_id)
    artifacts = (job.spec.get("runtime") or {}).get("artifacts") or []
    return ok(
        api.DownloadTrainingJobResponseV1(
            artifact_presigned_urls=[await run(_artifact_url, state, request, a) for a in artifacts]
        )
    )


def _artifact_url(state: ServiceState, request: Request, artifact: dict[str, str]) -> str:
    """A presigned URL of a job's bundle: S3's own for one in the service's bucket
    (baseten mode, as Baseten answers), else the local artifact store's."""
    bucket, key = artifact.get("s3_bucket"), artifact["s3_key"]
    if state.settings.s3_bucket and bucket == state.settings.s3_bucket:
        url: str = s3_client(state.settings).generate_presigned_url(  # type: ignore[attr-defined]
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=state.settings.url_ttl_s,
        )
        return url
    return signatures.signed_url(request, f"/v1/local/artifacts/{key}", state.settings.url_ttl_s)


@router.get("/blobs/credentials/train")
async def blob_credentials(request: Request, state: State) -> JSONResponse:
    """A bucket and key to upload a bundle to, with throwaway credentials: the
    service's S3-compatible bucket in baseten mode, else its own S3 stand-in, named
    in ``creds.endpoint_url`` (truss hands ``creds`` to boto3 as they are)."""
    issued = signatures.issue_s3_credentials()
    endpoint = None
    if not state.settings.s3_bucket:
        port = request.url.port or 80  # an IP, so boto3 addresses the bucket by path
        endpoint = f"http://127.0.0.1:{port}{s3_api.PREFIX}"
    answer = api.GetBlobCredentialsResponseV1(
        creds=api.AWSCredentialsV1(
            aws_access_key_id=issued.access_key,
            aws_secret_access_key=issued.secret_key,
            aws_session_token=issued.session_token,
            endpoint_url=endpoint,
        ),
        s3_key=f"training/{new_id(16)}/bundle.tar",
        s3_bucket=state.settings.s3_bucket or api.LOCAL_ARTIFACT_BUCKET,
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True))


# ---------------------------------------------------------------------- local artifact store


@router.put("/local/artifacts/{key}")
async def put_artifact(key: str, request: Request, state: State) -> JSONResponse:
    path = state.artifact_path(key)
    limit = state.settings.max_artifact_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise HttpError(413, "TOO_LARGE", too_large(declared, limit))
    digest = key.split(".", 1)[0]
    received = await save_stream(
        request.stream(), path, limit, digest if len(digest) == 64 else None
    )
    return JSONResponse(
        {"s3_bucket": api.LOCAL_ARTIFACT_BUCKET, "s3_key": key, "size_bytes": received.size}
    )


@router.head("/local/artifacts/{key}")
async def head_artifact(key: str, state: State) -> Response:
    path = state.artifact_path(key)
    if not path.is_file():
        return Response(status_code=404)
    return Response(headers={"content-length": str(path.stat().st_size)})


@presigned.get("/artifacts/{key}")
async def get_artifact(key: str, request: Request, state: State) -> FileResponse:
    signatures.check_signature(request, state.settings.baseten_mode)
    path = state.artifact_path(key)
    if not path.is_file():
        raise HttpError(404, "NOT_FOUND", f"no artifact {key}")
    return FileResponse(path)
