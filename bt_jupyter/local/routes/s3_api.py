"""The few S3 operations an upload needs, so Baseten's own CLI can push to this service.

``GET /v1/blobs/credentials/train`` hands out throwaway credentials plus, in
``creds.endpoint_url``, this endpoint: ``truss train push`` passes ``creds`` straight to
``boto3.resource("s3", **creds)``, so its upload lands here instead of on AWS.
Requests must be signed (AWS SigV4) with credentials this service issued
(:mod:`bt_jupyter.local.signatures`). Objects become artifacts of the local bucket
(``bt-jupyter-local``), which jobs start from like any other.

Served: PutObject, HeadObject, and multipart create / upload part / complete / abort.
Every refusal is S3's XML error (``<Error><Code>...``) with one line saying what was wrong;
a refused request stores nothing, and a failed completion ends its upload.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import Response

from bt_jupyter import api
from bt_jupyter.local.signatures import ascii_digits, content_sha256, streaming, verify_s3_request
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.store import new_id
from bt_jupyter.local.uploads import aws_chunked, save_stream
from bt_jupyter.local.wire import HttpError

PREFIX = "/s3"
MAX_PARTS = 10000  # S3's limit
#: Largest CompleteMultipartUpload body taken (10,000 parts with checksums fit).
MAX_COMPLETE_BYTES = 4 * 1024 * 1024
#: Multipart uploads untouched this long are dropped when the next one starts.
STALE_UPLOAD_S = 24 * 3600
_UPLOAD_ID = re.compile(r"^[a-z0-9]{1,64}$")
#: save_stream's codes as S3 names them
_S3_CODES = {"TOO_LARGE": "EntityTooLarge", "DIGEST_MISMATCH": "XAmzContentSHA256Mismatch"}


def _error(status: int, code: str, message: str) -> Response:
    body = f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    return Response(body, status, media_type="application/xml")


def _xml(tag: str, **fields: str) -> Response:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?><{tag}>{inner}</{tag}>'
    return Response(body, media_type="application/xml")


def _quoted(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


async def _answer(work: Awaitable[Response]) -> Response:
    """The operation's response, or the S3 error it was refused with."""
    try:
        return await work
    except HttpError as exc:
        return _error(exc.status, _S3_CODES.get(exc.code, exc.code), exc.message)


def _body(request: Request) -> AsyncIterator[bytes]:
    """The payload, unwrapped from ``aws-chunked`` framing when boto3 used it."""
    if not streaming(request):
        return request.stream()
    raw = request.headers.get("x-amz-decoded-content-length", "")
    if raw and not ascii_digits(raw, 19):
        raise HttpError(
            400, "InvalidArgument", f"x-amz-decoded-content-length {_quoted(raw)} is no size"
        )
    return aws_chunked(request.stream(), int(raw) if raw else None)


async def _parts(paths: list[Path]) -> AsyncIterator[bytes]:
    for path in paths:
        with path.open("rb") as part:
            while chunk := part.read(1024 * 1024):
                yield chunk


router = APIRouter(prefix=PREFIX)


def _check(state: ServiceState, request: Request, bucket: str, key: str) -> Path:
    """The object's file, once the request is known to be signed with credentials this
    service issued, for its bucket and a key that is an object key."""
    verify_s3_request(request)
    if bucket != api.LOCAL_ARTIFACT_BUCKET:
        raise HttpError(
            404, "NoSuchBucket", f"no bucket {_quoted(bucket)}: only {api.LOCAL_ARTIFACT_BUCKET}"
        )
    path = state.home.artifact_file(key)
    if path is None:
        raise HttpError(
            400,
            "InvalidArgument",
            f"{_quoted(key)} is not a valid object key (letters, digits, '._-' in "
            "'/'-separated parts; no '..', hidden or empty parts)",
        )
    return path


def _upload_folder(state: ServiceState, upload_id: str) -> Path:
    """The folder of an existing multipart upload's parts; 404 for any other id."""
    folder = state.home.artifacts / f".multipart-{upload_id}"
    if not _UPLOAD_ID.match(upload_id) or not folder.is_dir():
        raise HttpError(
            404,
            "NoSuchUpload",
            f"no multipart upload {_quoted(upload_id)}: start one with CreateMultipartUpload",
        )
    return folder


def _part_number(raw: str | None) -> int:
    if raw is None or not ascii_digits(raw, 5) or not 1 <= int(raw) <= MAX_PARTS:
        shown = "none" if raw is None else _quoted(raw, 30)
        raise HttpError(
            400,
            "InvalidArgument",
            f"partNumber must be an integer between 1 and {MAX_PARTS}, got {shown}",
        )
    return int(raw)


def _drop_stale_uploads(state: ServiceState) -> None:
    """Multipart uploads nobody completed or aborted for a day: their parts go."""
    cutoff = time.time() - STALE_UPLOAD_S
    for folder in state.home.artifacts.glob(".multipart-*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


@router.head("/{bucket}/{key:path}")
async def head_object(bucket: str, key: str, request: Request, state: State) -> Response:
    return await _answer(_head(state, request, bucket, key))


async def _head(state: ServiceState, request: Request, bucket: str, key: str) -> Response:
    path = _check(state, request, bucket, key)
    if not path.is_file():
        return Response(status_code=404)
    return Response(headers={"content-length": str(path.stat().st_size)})


@router.put("/{bucket}/{key:path}")
async def put(bucket: str, key: str, request: Request, state: State) -> Response:
    return await _answer(_put(state, request, bucket, key))


async def _put(state: ServiceState, request: Request, bucket: str, key: str) -> Response:
    """PutObject, or UploadPart (``?uploadId=&partNumber=``)."""
    path = _check(state, request, bucket, key)
    upload_id = request.query_params.get("uploadId")
    if upload_id is not None:
        number = _part_number(request.query_params.get("partNumber"))
        path = _upload_folder(state, upload_id) / f"{number:05d}"
    received = await save_stream(
        _body(request), path, state.settings.max_artifact_bytes, content_sha256(request)
    )
    return Response(headers={"ETag": f'"{received.md5}"'})


@router.post("/{bucket}/{key:path}")
async def post(bucket: str, key: str, request: Request, state: State) -> Response:
    return await _answer(_post(state, request, bucket, key))


async def _post(state: ServiceState, request: Request, bucket: str, key: str) -> Response:
    """CreateMultipartUpload (``?uploads``) or CompleteMultipartUpload (``?uploadId=``)."""
    path = _check(state, request, bucket, key)
    if "uploads" in request.query_params:
        _drop_stale_uploads(state)
        upload_id = new_id(20)
        (state.home.artifacts / f".multipart-{upload_id}").mkdir()
        return _xml("InitiateMultipartUploadResult", Bucket=bucket, Key=key, UploadId=upload_id)
    if "uploadId" not in request.query_params:
        raise HttpError(
            400,
            "InvalidRequest",
            "POST on an object takes ?uploads (start a multipart upload) or ?uploadId= "
            "(complete one)",
        )
    folder = _upload_folder(state, request.query_params["uploadId"])
    try:
        numbers = _listed_parts(await _complete_body(request))
        parts = [folder / f"{n:05d}" for n in numbers]
        missing = [n for n, p in zip(numbers, parts, strict=True) if not p.is_file()]
        if missing:
            raise HttpError(400, "InvalidPart", f"part {missing[0]} was not uploaded")
        received = await save_stream(_parts(parts), path, state.settings.max_artifact_bytes)
    except HttpError as exc:
        raise HttpError(
            exc.status, exc.code, f"{exc.message}; the upload was aborted, start a new one"
        ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    etag = f'"{received.md5}-{len(parts)}"'
    return _xml("CompleteMultipartUploadResult", Bucket=bucket, Key=key, ETag=etag)


async def _complete_body(request: Request) -> bytes:
    """The CompleteMultipartUpload body: at most :data:`MAX_COMPLETE_BYTES`, and the
    payload the signature declared."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_COMPLETE_BYTES:
            raise HttpError(
                400, "MalformedXML", f"CompleteMultipartUpload body over {MAX_COMPLETE_BYTES} bytes"
            )
    declared = content_sha256(request)
    actual = hashlib.sha256(body).hexdigest()
    if declared is not None and not hmac.compare_digest(declared, actual):
        raise HttpError(
            400, "XAmzContentSHA256Mismatch", "the body's sha256 is not x-amz-content-sha256"
        )
    return bytes(body)


def _listed_parts(body: bytes) -> list[int]:
    """The part numbers a CompleteMultipartUpload body lists: ascending, 1 to 10,000."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise HttpError(
            400, "MalformedXML", f"the CompleteMultipartUpload body is not XML ({exc})"
        ) from None
    if not root.tag.endswith("CompleteMultipartUpload"):
        raise HttpError(
            400, "MalformedXML", f"expected <CompleteMultipartUpload>, got {_quoted(root.tag)}"
        )
    numbers = [
        _part_number((el.text or "").strip()) for el in root.iter() if el.tag.endswith("PartNumber")
    ]
    if not numbers:
        raise HttpError(400, "MalformedXML", "CompleteMultipartUpload lists no <Part>")
    if any(a >= b for a, b in itertools.pairwise(numbers)):
        raise HttpError(400, "InvalidPartOrder", "parts must be listed in ascending order")
    return numbers


@router.delete("/{bucket}/{key:path}")
async def abort(bucket: str, key: str, request: Request, state: State) -> Response:
    return await _answer(_abort(state, request, bucket, key))


async def _abort(state: ServiceState, request: Request, bucket: str, key: str) -> Response:
    """AbortMultipartUpload; deleting objects is not served."""
    _check(state, request, bucket, key)
    if "uploadId" not in request.query_params:
        raise HttpError(
            405, "MethodNotAllowed", "only aborting a multipart upload (?uploadId=) is served"
        )
    shutil.rmtree(_upload_folder(state, request.query_params["uploadId"]), ignore_errors=True)
    return Response(status_code=204)
