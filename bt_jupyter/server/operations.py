"""What each endpoint does, as blocking calls on a :class:`~bt_jupyter.jobs.Client`.

No tornado here: the handlers parse the request, run one of these on a thread and write
its answer. The work itself is the client's (``Client.jobs``, ``Job.stop``,
``Job.deploy``, ...), the same code the kernel's magics and widget use.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from bt_jupyter import spec
from bt_jupyter._version import __version__
from bt_jupyter.compare import compare, run_row, view_state
from bt_jupyter.deployments import Deployment
from bt_jupyter.errors import MissingApiKey
from bt_jupyter.jobs import Client, Job, find_api_key
from bt_jupyter.limits import shown
from bt_jupyter.server.backends import BACKENDS
from bt_jupyter.server.cost import cost_json
from bt_jupyter.server.errors import BadRequest, Conflict, NoSuchDeployment
from bt_jupyter.server.wire import (
    JSON,
    checkpoint_json,
    deployment_json,
    history_json,
    job_json,
    project_json,
)


def config(default_backend: str) -> JSON:
    try:
        find_api_key()
        configured = True
    except MissingApiKey:
        configured = False
    return {
        "backends": list(BACKENDS),
        "default_backend": default_backend,
        "baseten_configured": configured,
        "version": __version__,
    }


def projects(client: Client) -> JSON:
    return {"projects": [project_json(p) for p in client.projects()]}


#: The most jobs one page of the sidebar's list may ask for.
MAX_PAGE = 1000
#: The longest cursor this server gives (a job id and a time, encoded), with room to spare.
MAX_CURSOR_CHARS = 400


@dataclass(frozen=True)
class Page:
    """Which jobs of a list to answer: ``limit`` of them (None: all) after the job that
    ``cursor`` names (None: from the newest)."""

    limit: int | None = None
    cursor: str | None = None


def page_of(limit: str, cursor: str) -> Page:
    """The page a request asks for (empty strings: not given); 400 with one line if the
    limit is no integer in 1..MAX_PAGE or the cursor is none this server gave."""
    count = None
    if limit:
        text = limit.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 8) or not (
            1 <= int(text) <= MAX_PAGE
        ):
            raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}, got {shown(limit)}")
        count = int(text)
    if cursor:
        _cursor_parts(cursor)  # refused now, before any work
    return Page(count, cursor or None)


def _cursor(job: Job) -> str:
    """Where the next page starts: after this job (its id, and its creation time for when
    it was deleted meanwhile). Opaque to the browser."""
    raw = json.dumps([job.id, job.created_at.timestamp()]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_parts(cursor: str) -> tuple[str, float]:
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        job_id, at = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(job_id, str) and isinstance(at, (int, float)) and math.isfinite(at):
            return job_id, float(at)
    except (ValueError, TypeError):
        pass
    raise BadRequest(
        f"cursor {shown(cursor)} is not one this server gave; ask without a cursor for the "
        "first page, then pass the cursor of each page to get the next"
    )


def jobs(
    client: Client,
    project: str | None,
    status: spec.TrainingJobStatus | None,
    page: Page | None = None,
) -> JSON:
    """A page of the jobs, newest first, with how many there are (in each status) and the
    cursor of the next page (None on the last). Only the page is turned into JSON: the
    sidebar of a 10,000-job service asks for the newest few."""
    page = page or Page()
    after = _cursor_parts(page.cursor) if page.cursor else None
    shown_jobs, listed = client.job_page(project, status, page.limit, after)
    return {
        "jobs": [job_json(job) for job in shown_jobs],
        "total": listed.total,
        "status_counts": {s.short: n for s, n in listed.status_counts.items()},
        "cursor": _cursor(shown_jobs[-1]) if shown_jobs and listed.more else None,
    }


def job(client: Client, job_id: str) -> JSON:
    found = client.job(job_id)
    deployments = [deployment_json(d) for d in found.deployments()]
    shown = job_json(found)
    return {
        "job": shown,
        "cost": cost_json(found, shown["elapsed_s"]),
        "history": history_json(found.history()),
        "checkpoints": [checkpoint_json(c) for c in found.checkpoints()],
        "deployments": deployments,
    }


def checkpoints(client: Client, job_id: str) -> JSON:
    return {"checkpoints": [checkpoint_json(c) for c in client.job(job_id).checkpoints()]}


def stop(client: Client, job_id: str) -> JSON:
    found = client.job(job_id)
    if found.status.is_terminal:
        raise Conflict(f"job {found.id} has already ended ({found.status.short}); nothing to stop")
    return {"job": job_json(found.stop())}


def deploy(client: Client, job_id: str, checkpoint: str) -> JSON:
    """Start serving a checkpoint; the deployment is DEPLOYING (not waited for)."""
    if not checkpoint:
        raise BadRequest('"checkpoint" must be "latest" or the name of a checkpoint')
    deployment = client.job(job_id).deploy(checkpoint)
    return {"deployment": deployment_json(deployment)}


def metrics(client: Client, job_id: str) -> JSON:
    """Every metric record of the job with the node that printed it, in order."""
    records = client.job(job_id).user_metrics(node=None)
    return {"metrics": [{"node": None, **r} for r in records]}


#: Jobs one Compare panel may hold (each is read in full: its logs, its checkpoints).
MAX_COMPARED = 20


def compare_jobs(client: Client, job_ids: list[str], metric: str = "") -> JSON:
    """The sidebar's Compare panel: the same view of the runs as ``%bt_compare``."""
    wanted = list(dict.fromkeys(i for i in job_ids if i))
    if not wanted:
        raise BadRequest('"jobs" must name at least one job id (comma-separated)')
    if len(wanted) > MAX_COMPARED:
        raise BadRequest(f"compare at most {MAX_COMPARED} jobs at once, not {len(wanted)}")
    comparison = compare([client.job(job_id) for job_id in wanted])
    rows = [run_row(run) for run in comparison.runs]
    done = all(run.job.status.is_terminal for run in comparison.runs)
    return {**view_state(comparison, rows, metric), "done": done}


def _deployment(client: Client, job_id: str, deployment_id: str) -> Deployment:
    for found in client.job(job_id).deployments():
        if found.id == deployment_id:
            return found
    raise NoSuchDeployment(f"job {job_id} has no deployment {deployment_id!r}")


def call_deployment(client: Client, job_id: str, deployment_id: str, text: str) -> JSON:
    """Send the try-it box's input: a prompt to a completions server, JSON to a
    ``%%bt_model`` one. The service's key is added by the client, here, never in the page."""
    deployment = _deployment(client, job_id, deployment_id)
    if deployment.kind == "model":
        try:
            request: Any = json.loads(text or "{}")
        except ValueError as exc:
            raise BadRequest(
                f"this deployment takes JSON (a class Model's predict input): {exc}"
            ) from None
        return {"text": json.dumps(deployment.predict(request))}
    return {"text": deployment.complete(text, max_tokens=32)}


def stop_deployment(client: Client, job_id: str, deployment_id: str) -> JSON:
    deployment = _deployment(client, job_id, deployment_id)
    if deployment.status not in deployment.PENDING | deployment.SERVING:
        raise Conflict(f"deployment {deployment.id} is already {deployment.status}")
    return {"deployment": deployment_json(deployment.stop())}
