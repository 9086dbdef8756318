"""The few S3 operations an upload needs, so Baseten's own CLI can push to this service.

``GET /v1/blobs/credentials/train`` hands out throwaway credentials plus, in
``creds.endpoint_url``, this endpoint: ``truss train push`` passes ``creds`` straight to
``boto3.resource("s3", **creds)``, so its upload lands here instead of on AWS.
Requests must carry an access key this service issued. Objects become artifacts of the
local bucket (``bt-jupyter-local``), which jobs start from like any other.

Served: PutObject, HeadObject, and multipart create / upload part / complete / abort.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bt_jupyter import api
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.store import new_id
from bt_jupyter.local.uploads import aws_chunked, save_stream
from bt_jupyter.local.wire import HttpError

PREFIX = "/s3"
_CREDENTIAL = re.compile(r"Credential=([A-Za-z0-9]+)/")


def _error(status: int, code: str, message: str) -> Response:
    body = f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    return Response(body, status, media_type="application/xml")


def _xml(tag: str, **fields: str) -> Response:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?><{tag}>{inner}</{tag}>'
    return Response(body, media_type="application/xml")


def _body(request: Request) -> AsyncIterator[bytes]:
    """The payload, unwrapped from ``aws-chunked`` framing when boto3 used it."""
    streaming = request.headers.get("x-amz-content-sha256", "").startswith("STREAMING-")
    if streaming or "aws-chunked" in request.headers.get("content-encoding", ""):
        return aws_chunked(request.stream())
    return request.stream()


async def _parts(paths: list[Path]) -> AsyncIterator[bytes]:
    for path in paths:
        with path.open("rb") as part:
            while chunk := part.read(1024 * 1024):
                yield chunk


router = APIRouter(prefix=PREFIX)


def _check(state: ServiceState, request: Request, bucket: str, key: str) -> Path | Response:
    """The object's file, or the S3 error to answer: an access key this service did not
    issue, another bucket, or a key that is no object key."""
    found = _CREDENTIAL.search(request.headers.get("authorization", ""))
    if found is None or found.group(1) not in state.issued_access_keys:
        return _error(403, "InvalidAccessKeyId", "use credentials from /v1/blobs/credentials")
    if bucket != api.LOCAL_ARTIFACT_BUCKET:
        return _error(404, "NoSuchBucket", f"only {api.LOCAL_ARTIFACT_BUCKET} is served here")
    path = state.home.artifact_file(key)
    if path is None:
        return _error(400, "InvalidArgument", f"{key!r} is not a valid object key")
    return path


def _uploads(state: ServiceState, upload_id: str) -> Path:
    """The folder of a multipart upload's parts."""
    if not re.fullmatch(r"[a-z0-9]+", upload_id):
        raise HttpError(400, "InvalidArgument", f"bad upload id {upload_id!r}")
    return state.home.artifacts / f".multipart-{upload_id}"


@router.head("/{bucket}/{key:path}")
async def head_object(bucket: str, key: str, request: Request, state: State) -> Response:
    path = _check(state, request, bucket, key)
    if isinstance(path, Response):
        return path
    if not path.is_file():
        return Response(status_code=404)
    return Response(headers={"content-length": str(path.stat().st_size)})


@router.put("/{bucket}/{key:path}")
async def put(bucket: str, key: str, request: Request, state: State) -> Response:
    path = _check(state, request, bucket, key)
    if isinstance(path, Response):
        return path
    limit = state.settings.max_artifact_bytes
    upload_id = request.query_params.get("uploadId")
    try:
        if upload_id is None:
            received = await save_stream(_body(request), path, limit)
        else:
            number = int(request.query_params.get("partNumber", "0"))
            folder = _uploads(state, upload_id)
            if not folder.is_dir() or not 1 <= number <= 10000:
                return _error(404, "NoSuchUpload", f"no upload {upload_id} part {number}")
            received = await save_stream(_body(request), folder / f"{number:05d}", limit)
    except HttpError as exc:
        return _error(exc.status, "EntityTooLarge", exc.message)
    return Response(headers={"ETag": f'"{received.md5}"'})


@router.post("/{bucket}/{key:path}")
async def post(bucket: str, key: str, request: Request, state: State) -> Response:
    path = _check(state, request, bucket, key)
    if isinstance(path, Response):
        return path
    if "uploads" in request.query_params:
        upload_id = new_id(20)
        _uploads(state, upload_id).mkdir()
        return _xml("InitiateMultipartUploadResult", Bucket=bucket, Key=key, UploadId=upload_id)
    folder = _uploads(state, request.query_params.get("uploadId", ""))
    if not folder.is_dir():
        return _error(404, "NoSuchUpload", "no such multipart upload")
    numbers = [
        int(el.text or 0)
        for el in ET.fromstring(await request.body()).iter()
        if el.tag.endswith("PartNumber")
    ]
    parts = [folder / f"{n:05d}" for n in numbers]
    if not parts or any(not p.is_file() for p in parts):
        return _error(400, "InvalidPart", "a listed part was not uploaded")
    try:
        received = await save_stream(_parts(parts), path, state.settings.max_artifact_bytes)
    except HttpError as exc:
        return _error(exc.status, "EntityTooLarge", exc.message)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    etag = f'"{received.md5}-{len(parts)}"'
    return _xml("CompleteMultipartUploadResult", Bucket=bucket, Key=key, ETag=etag)


@router.delete("/{bucket}/{key:path}")
async def abort(bucket: str, key: str, request: Request, state: State) -> Response:
    path = _check(state, request, bucket, key)
    if isinstance(path, Response):
        return path
    shutil.rmtree(_uploads(state, request.query_params.get("uploadId", "")), ignore_errors=True)
    return Response(status_code=204)
