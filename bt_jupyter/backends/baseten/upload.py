"""Upload a job's bundle the way ``truss train push`` does: S3, temporary credentials.

``GET /v1/blobs/credentials/train`` gives a bucket, a key and short-lived AWS
credentials; the bundle goes there with a multipart upload (progress shown for anything
slower than a second), and the job is created with ``runtime.artifacts`` pointing at it.
A bundle already uploaded to this service (same content hash) is not uploaded again: the
earlier artifact is reused, recorded in ``$BT_JUPYTER_HOME/uploads.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bt_jupyter import api
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import default_home

#: For tests and S3-compatible stand-ins (a moto server); real Baseten uses AWS's S3.
ENDPOINT_ENV = "BT_JUPYTER_S3_ENDPOINT_URL"
PART_SIZE = 8 * 1024 * 1024

Progress = Callable[[int, int], None]


def _uploads_file() -> Path:
    root = default_home()
    root.mkdir(parents=True, exist_ok=True)
    return root / "uploads.json"


def _known(base_url: str, digest: str) -> api.CreateTrainingJobS3Artifact | None:
    try:
        known = json.loads(_uploads_file().read_text())
    except (FileNotFoundError, ValueError):
        return None
    entry = known.get(f"{base_url} {digest}")
    return api.CreateTrainingJobS3Artifact(**entry) if entry else None


def _remember(base_url: str, digest: str, artifact: api.CreateTrainingJobS3Artifact) -> None:
    path = _uploads_file()
    try:
        known = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    known[f"{base_url} {digest}"] = artifact.model_dump()
    tmp = path.with_name(f".uploads.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    tmp.replace(path)


def text_progress(total: int) -> Progress:
    """A one-line progress bar on stderr, shown only once an upload takes over a second."""
    started = time.monotonic()

    def show(sent: int, _: int) -> None:
        if time.monotonic() - started < 1.0 and sent < total:
            return
        width = 30
        done = int(width * sent / max(total, 1))
        print(
            f"\rUploading bundle [{'#' * done}{'.' * (width - done)}] "
            f"{sent / 1e6:.1f}/{total / 1e6:.1f} MB",
            end="\n" if sent >= total else "",
            file=sys.stderr,
            flush=True,
        )

    return show


def upload_bundle(
    client: ApiClient, data: bytes, progress: Progress | None = None
) -> tuple[api.CreateTrainingJobS3Artifact, int]:
    """Upload ``data`` for a job; return the artifact and the bytes sent (0 if known)."""
    digest = hashlib.sha256(data).hexdigest()
    known = _known(client.base_url, digest)
    if known is not None:
        return known, 0
    import boto3
    from boto3.s3.transfer import TransferConfig

    blob = client.blob_credentials()
    s3 = boto3.client(
        "s3",
        aws_access_key_id=blob.creds.aws_access_key_id,
        aws_secret_access_key=blob.creds.aws_secret_access_key,
        aws_session_token=blob.creds.aws_session_token,
        endpoint_url=os.environ.get(ENDPOINT_ENV) or blob.creds.endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-west-2"),
    )
    report = progress or text_progress(len(data))
    sent = {"bytes": 0}
    lock = threading.Lock()

    def on_chunk(n: int) -> None:
        with lock:
            sent["bytes"] += n
            report(sent["bytes"], len(data))

    s3.upload_fileobj(
        io.BytesIO(data),
        blob.s3_bucket,
        blob.s3_key,
        Config=TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE),
        Callback=on_chunk,
    )
    artifact = api.CreateTrainingJobS3Artifact(s3_bucket=blob.s3_bucket, s3_key=blob.s3_key)
    _remember(client.base_url, digest, artifact)
    return artifact, len(data)
