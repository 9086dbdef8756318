"""What each endpoint does, as blocking calls on a :class:`~bt_jupyter.jobs.Client`.

No tornado here: the handlers parse the request, run one of these on a thread and write
its answer. The work itself is the client's (``Client.jobs``, ``Job.stop``,
``Job.deploy``, ...), the same code the kernel's magics and widget use.
"""

from __future__ import annotations

from bt_jupyter import spec
from bt_jupyter._version import __version__
from bt_jupyter.errors import MissingApiKey
from bt_jupyter.jobs import Client, find_api_key
from bt_jupyter.server.backends import BACKENDS
from bt_jupyter.server.errors import BadRequest, Conflict
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
    return {
        "job": job_json(found),
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
