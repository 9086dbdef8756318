"""The JSON the sidebar reads: jobs, checkpoints, deployments, status history.

Plain dicts built from the handles of :mod:`bt_jupyter.jobs` and the models of
:mod:`bt_jupyter.api`; the shapes are the REST contract of ``bt-jupyter/`` (README).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bt_jupyter import api, spec
from bt_jupyter.deployments import Deployment
from bt_jupyter.jobs import Job

JSON = dict[str, Any]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 with a timezone (a naive time from a service is UTC)."""
    return _aware(moment).isoformat()


def status_json(status: spec.TrainingJobStatus) -> JSON:
    return {"status": status.value, "status_short": status.short}


def gpu(instance: api.InstanceTypeV1) -> str | None:
    """``"H100:8"``, or None for a CPU-only job."""
    if not instance.gpu_type or instance.gpu_count <= 0:
        return None
    return f"{instance.gpu_type}:{instance.gpu_count}"


def updated_at(job: Job) -> datetime:
    """When the job last changed (when it ended, for an ended job)."""
    return _aware(job.updated_at)


def job_json(job: Job, now: datetime | None = None) -> JSON:
    updated = updated_at(job)
    created_at = _aware(job.created_at)
    until = updated if job.status.is_terminal else (now or datetime.now(timezone.utc))
    return {
        "id": job.id,
        "name": job.name,
        "project": job.project,
        "project_id": job.project_id,
        **status_json(job.status),
        "is_terminal": job.status.is_terminal,
        "created_at": created_at.isoformat(),
        "updated_at": updated.isoformat(),
        "elapsed_s": max(0.0, (until - created_at).total_seconds()),
        "node_count": job.node_count,
        "gpu": gpu(job.instance_type),
        "error_message": job.error_message,
        # why a PENDING/QUEUED job waits, or what a CREATED one does (mirroring weights)
        "notice": job.notice,
    }


def history_json(history: list[tuple[spec.TrainingJobStatus, str]]) -> list[JSON]:
    return [{**status_json(status), "at": at} for status, at in history]


def checkpoint_json(checkpoint: api.TrainingJobCheckpointV1) -> JSON:
    adapter = checkpoint.lora_adapter_config or {}
    rank = adapter.get("r")
    return {
        "name": checkpoint.checkpoint_id,
        "created_at": iso(checkpoint.created_at),
        "size_bytes": checkpoint.size_bytes,
        "checkpoint_type": checkpoint.checkpoint_type,
        "base_model": checkpoint.base_model,
        "lora_rank": rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
    }


def deployment_json(deployment: Deployment) -> JSON:
    return {
        "id": deployment.id,
        "name": deployment.name,
        "status": deployment.status,
        "url": deployment.url,
        "checkpoint": deployment.checkpoint,
        "kind": deployment.kind,
        "error": deployment.error_message,
    }


def project_json(project: api.TrainingProjectV1) -> JSON:
    return {
        "id": project.id,
        "name": project.name,
        "created_at": iso(project.created_at),
        "updated_at": iso(project.updated_at),
    }
