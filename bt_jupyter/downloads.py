"""A job's files on this disk, as ``truss train`` fetches them: the checkpoint URLs file
(``truss train get_checkpoint_urls``) and the job's own bundle (``truss train download``).

Same names and shapes as truss writes, so scripts written around one work with the other;
every member of a downloaded bundle is checked before anything is written (no ``..``, no
absolute path, no link out of the folder).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bt_jupyter.errors import DownloadError

if TYPE_CHECKING:
    from bt_jupyter.jobs import Job


def _base_name(job: Job) -> str:
    """``{project}_{job id}``, spaces as dashes: truss's name for a job's files."""
    return f"{job.project}_{job.id}".replace(" ", "-")


def write_checkpoint_urls(job: Job, folder: Path | str | None = None) -> Path:
    """Write ``{project}_{job}_checkpoints.json`` into ``folder`` (default: the current
    one): the job, and every checkpoint file with its presigned URL and size."""
    files = job.checkpoint_files()
    if not files:
        raise DownloadError(
            f"job {job.id} has no checkpoint files yet ({job.status.short}): write checkpoints "
            "to $BT_CHECKPOINT_DIR with checkpointing on"
        )
    target = Path(folder or Path.cwd()) / f"{_base_name(job)}_checkpoints.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "job": job.refresh().wire.model_dump(mode="json"),
        "checkpoint_artifacts": [f.model_dump(mode="json") for f in files],
    }
    target.write_text(json.dumps(document, indent=2))
    return target


def download_artifact(job: Job, folder: Path | str | None = None, unzip: bool = True) -> Path:
    """Fetch the job's bundle into ``folder`` (default: the current one): unpacked into
    ``{project}_{job}/`` (refused when that exists), or as ``{project}_{job}.tgz``."""
    urls = job.artifact_urls()
    if not urls:
        raise DownloadError(
            f"job {job.id} has no artifact to download (it was created without files)"
        )
    output = Path(folder or Path.cwd()).resolve()
    output.mkdir(parents=True, exist_ok=True)
    if not unzip:
        return job.fetch(urls[0], output / f"{_base_name(job)}.tgz")
    unpacked = output / _base_name(job)
    if unpacked.exists():
        raise DownloadError(f"{unpacked} already exists: remove it or download into another folder")
    with tempfile.TemporaryDirectory() as scratch:
        archive = job.fetch(urls[0], Path(scratch) / "bundle.tgz")
        try:
            with tarfile.open(archive, "r:*") as tar:
                # the "data" filter refuses absolute paths, "..", links out and devices
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(unpacked, ignore_errors=True)  # nothing half-written stays
            raise DownloadError(f"job {job.id}'s artifact could not be unpacked: {exc}") from None
    return unpacked
