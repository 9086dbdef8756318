"""Settings of the local service and its runners, read from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bt_jupyter import limits, spec


def s3_client(settings: Settings) -> object:
    """A boto3 S3 client for the service's S3-compatible endpoint (baseten mode)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        region_name="us-east-1",
    )


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


#: How a runner keeps a job's processes together (see ``containment``).
CONTAINMENT_ENV = "BT_JUPYTER_CONTAINMENT"
CONTAINMENT_MODES = ("auto", "cgroup", "subreaper")
#: S3's own limit for a presigned URL's lifetime; ours follow it.
MAX_URL_TTL_S = 7 * 24 * 3600


def parse_capacity(text: str) -> dict[str, int]:
    """``"H100:1,A100:8"`` -> ``{"H100": 1, "A100": 8}``; one clear error otherwise."""
    found: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        gpu_type, _, count = item.partition(":")
        if gpu_type not in spec.ACCELERATORS or not count.isdigit():
            known = ", ".join(sorted(spec.ACCELERATORS))
            raise ValueError(
                f"BT_JUPYTER_GPU_CAPACITY: {limits.shown(item)} is not TYPE:COUNT "
                f"(e.g. H100:8); TYPE is one of {known}"
            )
        found[gpu_type] = limits.check_int(int(count), 0, limits.MAX_CAPACITY_GPUS)
    return found


def _url_ttl_s() -> int:
    try:
        ttl = int(os.environ.get("BT_JUPYTER_PRESIGNED_URL_TTL_S", Settings.url_ttl_s))
    except ValueError:
        return Settings.url_ttl_s
    return min(max(ttl, 1), MAX_URL_TTL_S)


@dataclass(frozen=True)
class Settings:
    #: Seconds between SIGTERM and SIGKILL when a job is stopped (Baseten-like default).
    stop_grace: float = 30.0
    #: Refuse (DEPLOY_FAILED) jobs that ask for GPUs this machine lacks, instead of CPU.
    require_gpu: bool = False
    #: Largest artifact (bundle) the service accepts.
    max_artifact_bytes: int = 5 * 1024**3
    #: "baseten" mode: artifacts come from this S3-compatible endpoint and bucket, as
    #: Baseten's jobs do (blob credentials point there). Empty: the local artifact store.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    #: Baseten stand-in mode (on with an S3 bucket, or BT_JUPYTER_SERVICE_MODE=baseten):
    #: the service also behaves as Baseten does where a client can get it wrong. New jobs
    #: are QUEUED for ``queue_s`` before CREATED; checkpoint files show up
    #: ``checkpoint_sync_s`` after they were written (``checkpoint_sync_status`` says
    #: SYNCING until then); every third log line reaches the log API ``log_late_s`` late,
    #: behind newer lines; checkpoint and artifact URLs refuse an Authorization header.
    baseten_mode: bool = False
    queue_s: float = 0.0
    checkpoint_sync_s: float = 0.0
    log_late_s: float = 0.0
    #: Seconds each log window request waits before answering (the round trip to
    #: Baseten's log API, ``BT_JUPYTER_SERVICE_LOG_LATENCY_S``): benches measure against
    #: the cloud's latency, not a local socket's. Off (0) unless set.
    log_latency_s: float = 0.0
    #: Never launch a job (``BT_JUPYTER_LOCAL_NO_RUN=1``): a created job is stored and goes
    #: straight to DEPLOY_FAILED, saying why. For the property-based fuzz run of the API,
    #: whose generated start commands must never run as shell commands on this machine.
    no_run: bool = False
    #: ``auto`` (a cgroup v2 per job where possible), ``cgroup`` (the same, saying so in
    #: the job's log when it cannot) or ``subreaper`` (no cgroup: tests prove the fallback).
    containment: str = "auto"
    #: Lifetime of the service's presigned URLs (``BT_JUPYTER_PRESIGNED_URL_TTL_S``).
    url_ttl_s: int = 3600
    #: GPUs per type the service hands out, over what this machine has
    #: (``BT_JUPYTER_GPU_CAPACITY=H100:1,A100:8``); a type with none set is not gated.
    gpu_capacity: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        bucket = os.environ.get("BT_JUPYTER_SERVICE_S3_BUCKET", "")
        baseten = bool(bucket) or os.environ.get("BT_JUPYTER_SERVICE_MODE", "") == "baseten"
        return cls(
            baseten_mode=baseten,
            queue_s=_float("BT_JUPYTER_SERVICE_QUEUE_S", 0.5 * baseten),
            checkpoint_sync_s=_float("BT_JUPYTER_SERVICE_CHECKPOINT_SYNC_S", 1.5 * baseten),
            log_late_s=_float("BT_JUPYTER_SERVICE_LOG_LATE_S", 1.5 * baseten),
            log_latency_s=_float("BT_JUPYTER_SERVICE_LOG_LATENCY_S", 0.0),
            stop_grace=_float("BT_JUPYTER_STOP_GRACE_S", cls.stop_grace),
            require_gpu=os.environ.get("BT_JUPYTER_REQUIRE_GPU", "") not in ("", "0", "false"),
            max_artifact_bytes=int(_float("BT_JUPYTER_MAX_ARTIFACT_BYTES", cls.max_artifact_bytes)),
            s3_endpoint=os.environ.get("BT_JUPYTER_SERVICE_S3_ENDPOINT", ""),
            s3_bucket=bucket,
            no_run=os.environ.get("BT_JUPYTER_LOCAL_NO_RUN", "") not in ("", "0", "false"),
            containment=mode
            if (mode := os.environ.get(CONTAINMENT_ENV)) in CONTAINMENT_MODES
            else "auto",
            url_ttl_s=_url_ttl_s(),
            gpu_capacity=parse_capacity(os.environ.get("BT_JUPYTER_GPU_CAPACITY", "")),
        )
