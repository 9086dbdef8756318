"""What each endpoint does, as blocking calls on a :class:`~bt_jupyter.jobs.Client`.

No tornado here: the handlers parse the request, run one of these on a thread and write
its answer. The work itself is the client's (``Client.jobs``, ``Job.stop``,
``Job.deploy``, ...), the same code the kernel's magics and widget use.
"""

from __future__ import annotations

import json
from typing import Any

from bt_jupyter import spec
from bt_jupyter._version import __version__
from bt_jupyter.compare import compare, run_row, view_state
from bt_jupyter.deployments import Deployment
from bt_jupyter.errors import MissingApiKey
from bt_jupyter.jobs import Client, find_api_key
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


def jobs(client: Client, project: str | None, status: spec.TrainingJobStatus | None) -> JSON:
    return {"jobs": [job_json(job) for job in client.jobs(project=project, status=status)]}


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
