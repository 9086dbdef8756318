"""What ``Client.submit`` checks before anything is created: a secret or a checkpoint the
job references must exist, or the job would be created only to end DEPLOY_FAILED.

Both services answer these questions through the same REST API (secrets are listed as
truss lists them), so the checks are written once, for both.
"""

from __future__ import annotations

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import ApiError, MissingSecret, NoCheckpoint

_SHOWN = 10  # names listed in an error, at most


def _listing(names: list[str]) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(repr(n) for n in names[:_SHOWN]) + more


def secret_names(rest: ApiClient, team_id: str | None) -> set[str] | None:
    """The secrets a job of ``team_id`` can reference; None when the service cannot say
    (then nothing is refused: an unknown is not an absence)."""
    path = f"/v1/teams/{team_id}/secrets" if team_id else "/v1/secrets"
    try:
        body = rest.request("GET", path).json()
    except (ApiError, ValueError):
        return None
    entries = body.get("secrets") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return None
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    return {n for n in names if isinstance(n, str)} if len(names) == len(entries) else None


def check_secrets(rest: ApiClient, job: spec.TrainingJob, team_id: str | None, advice: str) -> None:
    """Refuse a SecretReference (or a weights source's auth secret) to a secret that does
    not exist, naming those that do."""
    wanted = {
        value.name: f"${key}"
        for key, value in job.runtime.environment_variables.items()
        if isinstance(value, spec.SecretReference)
    }
    wanted |= {w.auth_secret_name: w.source for w in job.weights if w.auth_secret_name}
    if not wanted:
        return
    known = secret_names(rest, team_id)
    if known is None:
        return
    missing = [name for name in wanted if name not in known]
    if missing:
        name = missing[0]
        raise MissingSecret(
            f"secret {name!r} (for {wanted[name]}) does not exist; the secrets are: "
            f"{_listing(sorted(known))}. {advice.format(name=name)}"
        )


def latest_checkpoint(rest: ApiClient, ref: spec.LatestCheckpoint, project: str) -> tuple[str, str]:
    """(job id, checkpoint name): the newest model checkpoint of ``ref``'s job, or of the
    newest job of its project (this job's project by default) that has one."""
    if ref.job_id:
        candidates = rest.search_jobs(job_id=ref.job_id)
        where = f"job {ref.job_id!r}"
    else:
        name = ref.project_name or project
        project_id = next((p.id for p in rest.projects() if p.name == name), None)
        candidates = rest.search_jobs(project_id=project_id) if project_id else []
        where = f"project {name!r}"
    for found in sorted(candidates, key=lambda j: j.created_at, reverse=True):
        checkpoints = rest.checkpoints(found.training_project_id, found.id)
        if checkpoints:
            newest = max(reversed(checkpoints), key=lambda c: c.created_at)
            return found.id, newest.checkpoint_id
    if ref.job_id and not candidates:
        raise NoCheckpoint(f"no checkpoint to load: there is no job {ref.job_id!r}")
    raise NoCheckpoint(f"no checkpoint to load: {where} has no job with checkpoints")


def _named_checkpoint(rest: ApiClient, ref: spec.NamedCheckpoint) -> None:
    found = rest.search_jobs(job_id=ref.job_id)
    if not found:
        raise NoCheckpoint(f"no checkpoint to load: there is no job {ref.job_id!r}")
    job: api.TrainingJobV1 = found[0]
    names = [c.checkpoint_id for c in rest.checkpoints(job.training_project_id, job.id)]
    if ref.checkpoint_name in names:
        return
    # an ended Baseten job lists its checkpoints only once they are copied to storage
    rest.wait_checkpoints_synced(job.training_project_id, job.id)
    names = [c.checkpoint_id for c in rest.checkpoints(job.training_project_id, job.id)]
    if ref.checkpoint_name not in names:
        raise NoCheckpoint(
            f"no checkpoint to load: job {job.id} has no checkpoint {ref.checkpoint_name!r}; "
            f"it has: {_listing(names)}"
        )


def check_checkpoints(rest: ApiClient, job: spec.TrainingJob, project: str) -> None:
    """Refuse checkpoint references that resolve to nothing (Loops runs cannot be listed
    through this API: those the service checks)."""
    config = job.runtime.load_checkpoint_config
    if config is None or not config.enabled:
        return
    for ref in config.checkpoints:
        if isinstance(ref, spec.LatestCheckpoint):
            latest_checkpoint(rest, ref, project)
        elif isinstance(ref, spec.NamedCheckpoint):
            _named_checkpoint(rest, ref)
