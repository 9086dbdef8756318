"""The Python API people and magics use: ``Client`` (a backend) and ``Job`` handles.

``Client.local()`` talks to the embedded local service (started on demand);
``Client.baseten()`` to Baseten's cloud with an API key from the argument,
``$BASETEN_API_KEY`` or the ``~/.trussrc`` that Baseten's truss CLI writes. Both speak
the same REST API through :class:`bt_jupyter.client.ApiClient`.
"""

from __future__ import annotations

import configparser
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, overload

from bt_jupyter import api, spec
from bt_jupyter.client import SYNC_TIMEOUT_S, ApiClient, FollowedLog, node_of
from bt_jupyter.deployments import CloudDeployment, Deployment, LocalDeployment
from bt_jupyter.errors import BtJupyterError, InvalidConfigError
from bt_jupyter.packaging import Bundle
from bt_jupyter.packaging.files import included_files

BASETEN_API_URL = "https://api.baseten.co"
S = spec.TrainingJobStatus


class JobFailed(BtJupyterError):
    """The job ended FAILED or DEPLOY_FAILED; the message is the job's error message."""


class NoSuchJob(BtJupyterError):
    pass


class NoCheckpoint(BtJupyterError):
    """A "latest" checkpoint to load was asked for, and there is none."""


class MissingApiKey(BtJupyterError):
    pass


@dataclass(frozen=True)
class ApiKey:
    value: str
    source: str  # where it came from, for %bt_config (never the key itself)
    #: The REST API of the profile's ``remote_url``, when the key came from a profile.
    api_url: str | None = None


def rest_url(remote_url: str) -> str:
    """A truss profile's app URL -> its REST API: ``https://app.baseten.co`` ->
    ``https://api.baseten.co``; any other URL (a local service) serves both itself."""
    parts = urllib.parse.urlsplit(remote_url.rstrip("/"))
    if parts.netloc.startswith("app."):
        parts = parts._replace(netloc="api." + parts.netloc[4:])
    return urllib.parse.urlunsplit(parts)


def find_api_key(api_key: str | None = None, remote: str | None = None) -> ApiKey:
    """The Baseten API key: the argument, ``$BASETEN_API_KEY``, then ``~/.trussrc``."""
    if api_key:
        return ApiKey(api_key, "the api_key argument")
    if os.environ.get("BASETEN_API_KEY"):
        return ApiKey(os.environ["BASETEN_API_KEY"], "$BASETEN_API_KEY")
    # truss reads $USER_TRUSSRC_PATH too: one variable points both at the same profiles
    trussrc = Path(os.environ.get("USER_TRUSSRC_PATH") or Path.home() / ".trussrc").expanduser()
    config = configparser.ConfigParser()
    if trussrc.is_file():
        config.read(trussrc)
    names = [remote] if remote else config.sections()
    for name in names:
        if name in config and config[name].get("remote_provider", "baseten") == "baseten":
            key = config[name].get("api_key")
            if key:
                remote_url = config[name].get("remote_url")
                api_url = rest_url(remote_url) if remote_url else None
                return ApiKey(key, f"{trussrc} [{name}]", api_url)
    where = f"profile [{remote}] of {trussrc}" if remote else f"$BASETEN_API_KEY or {trussrc}"
    raise MissingApiKey(
        f"no Baseten API key in {where}: pass api_key=..., set BASETEN_API_KEY, or run "
        "`truss login`"
    )


class Client:
    """A backend to train on: ``Client.local()`` (the default) or ``Client.baseten()``."""

    def __init__(self, api_client: ApiClient, backend: str, key_source: str) -> None:
        self.api, self.backend, self.key_source = api_client, backend, key_source

    @classmethod
    def local(cls, home: Path | None = None) -> Client:
        api_client = ApiClient.local(home)
        return cls(api_client, "local", "the local service's key file")

    @classmethod
    def baseten(
        cls, api_key: str | None = None, remote: str | None = None, base_url: str | None = None
    ) -> Client:
        key = find_api_key(api_key, remote)
        url = base_url or os.environ.get("BT_JUPYTER_BASETEN_URL") or key.api_url or BASETEN_API_URL
        return cls(ApiClient(url, key.value), "baseten", key.source)

    @property
    def url(self) -> str:
        return self.api.base_url

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _project_id(self, name: str) -> str | None:
        return next((p.id for p in self.api.projects() if p.name == name), None)

    def submit(
        self, project: spec.TrainingProject, bundle: Bundle | None = None, team: str | None = None
    ) -> Job:
        """Create ``project.job`` with the bundle's files (uploaded once per content), in
        the project of that name (of ``team`` when given)."""
        project = spec.as_training_project(project)
        if bundle is not None and not project.job.enable_baseten_workdir:
            raise InvalidConfigError(
                "TrainingJob.enable_baseten_workdir: a packaged cell runs from its files in "
                "the working directory, so it needs enable_baseten_workdir=True (the default)"
            )
        if team is not None and not self.api.local_extensions:
            from bt_jupyter.cloud.teams import team_id

            team = team_id(self.api, team)  # Baseten's path takes the id; people know names
        remote = self.api.upsert_project(project, team_id=team)
        artifacts = []
        if bundle is not None:
            if self.api.local_extensions:
                artifacts.append(self.api.upload_artifact(bundle.archive)[0])
            else:
                from bt_jupyter.cloud.upload import upload_bundle

                artifacts.append(upload_bundle(self.api, bundle.archive)[0])
        job = project.job
        if not self.api.local_extensions:
            job = self._name_latest_checkpoints(job, project.name)
        created = self.api.create_job(remote.id, job, artifacts)
        outputs = [str(n) for n in bundle.manifest.get("outputs") or []] if bundle else []
        return Job(self, created, base_image=job.image.base_image, outputs=outputs)

    def _name_latest_checkpoints(self, job: spec.TrainingJob, project: str) -> spec.TrainingJob:
        """Replace "latest" checkpoint references by the checkpoint they mean now.

        Baseten resolves "latest" on its side, to the newest top-level folder of the
        checkpoint directory, and the folder a job's ``--out`` values are saved in is
        written last: Baseten would load that instead of the model. So on Baseten the
        client resolves "latest" itself, skipping that folder, and sends a named
        checkpoint (what is loaded is then also what was printed at submission)."""
        config = job.runtime.load_checkpoint_config
        if config is None or not config.enabled:
            return job
        if not any(isinstance(r, spec.LatestCheckpoint) for r in config.checkpoints):
            return job
        refs: list[spec.CheckpointReference] = []
        for ref in config.checkpoints:
            if isinstance(ref, spec.LatestCheckpoint):
                job_id, name = self._latest_checkpoint(ref, project)
                refs.append(spec.NamedCheckpoint(checkpoint_name=name, job_id=job_id))
            else:
                refs.append(ref)
        runtime = job.runtime.model_copy(
            update={"load_checkpoint_config": config.model_copy(update={"checkpoints": refs})}
        )
        return job.model_copy(update={"runtime": runtime})

    def _latest_checkpoint(self, ref: spec.LatestCheckpoint, project: str) -> tuple[str, str]:
        """(job id, checkpoint name): the newest model checkpoint of ``ref``'s job, or of
        the newest job of its project (this job's project by default) that has one."""
        if ref.job_id:
            candidates = self.api.search_jobs(job_id=ref.job_id)
            where = f"job {ref.job_id}"
        else:
            name = ref.project_name or project
            project_id = self._project_id(name)
            candidates = self.api.search_jobs(project_id=project_id) if project_id else []
            where = f"project {name!r}"
        for found in sorted(candidates, key=lambda j: j.created_at, reverse=True):
            checkpoints = self.api.checkpoints(found.training_project_id, found.id)
            if checkpoints:
                return found.id, max(
                    reversed(checkpoints), key=lambda c: c.created_at
                ).checkpoint_id
        raise NoCheckpoint(f"no checkpoint to load: {where} has no job with checkpoints")

    def push(self, project: Any, source_dir: Path | str | None = None) -> Job:
        """Like ``truss_train.push``: the project's job with ``source_dir`` as its files."""
        folder = Path(source_dir or Path.cwd())
        files = {path: file.read_bytes() for path, file in included_files(["."], folder)}
        bundle = Bundle(files={p.removeprefix("./"): d for p, d in files.items()}, manifest={})
        return self.submit(spec.as_training_project(project), bundle)

    def jobs(
        self, project: str | None = None, status: spec.TrainingJobStatus | str | None = None
    ) -> list[Job]:
        """Jobs, newest first; of one project (by name) and/or in one status."""
        project_id = None
        if project is not None:
            project_id = self._project_id(project)
            if project_id is None:
                return []
        statuses = [S.parse(status)] if status else None
        return [
            Job(self, j) for j in self.api.search_jobs(project_id=project_id, statuses=statuses)
        ]

    def job(self, job_id: str) -> Job:
        """Re-attach to a job by id (after a kernel restart, from another notebook, ...)."""
        found = self.api.search_jobs(job_id=job_id)
        if not found:
            raise NoSuchJob(f"no job {job_id!r} on the {self.backend} backend ({self.url})")
        return Job(self, found[0])


class Job:
    """A handle on one training job; cheap to keep, refreshed on demand."""

    def __init__(
        self,
        client: Client,
        wire: api.TrainingJobV1,
        base_image: str | None = None,
        outputs: list[str] | None = None,
    ) -> None:
        self.client, self._wire = client, wire
        #: Known when the job was submitted from here (Baseten's job API does not return it).
        self.base_image = base_image
        #: The ``--out`` names, when submitted from here (else read from its bundle).
        self.expected_outputs = outputs
        #: Called (with this job) when ``wait()`` returns or raises: views of the job use
        #: it to show their final state from the caller's thread (and cell).
        self.on_finished: list[Callable[[Job], None]] = []

    def __repr__(self) -> str:
        error = f", error={self.error_message!r}" if self.error_message else ""
        return (
            f"<Job {self.id} {self.name or ''} [{self.status.short}] project={self.project}{error}>"
        )

    @property
    def id(self) -> str:
        return self._wire.id

    @property
    def name(self) -> str | None:
        return self._wire.name

    @property
    def project(self) -> str:
        return self._wire.training_project.name

    @property
    def project_id(self) -> str:
        return self._wire.training_project_id

    @property
    def status(self) -> spec.TrainingJobStatus:
        return self._wire.status

    @property
    def error_message(self) -> str | None:
        """Why the job failed; None while it waits in the queue (see :attr:`notice`)."""
        return None if self.status.is_waiting else self._wire.error_message

    @property
    def notice(self) -> str | None:
        """A PENDING or QUEUED job's message: advice about the queue, not an error."""
        return self._wire.error_message if self.status.is_waiting else None

    @property
    def created_at(self) -> datetime:
        return self._wire.created_at

    @property
    def updated_at(self) -> datetime:
        return self._wire.updated_at

    @property
    def node_count(self) -> int:
        return self._wire.node_count

    @property
    def instance_type(self) -> api.InstanceTypeV1:
        return self._wire.instance_type

    @property
    def _rest(self) -> ApiClient:
        return self.client.api

    def refresh(self) -> Job:
        self._wire = self._rest.job(self.project_id, self.id).training_job
        return self

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> Job:
        """Block until the job ends; raise :class:`JobFailed` if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().status.is_terminal:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {self.status.short} after {timeout}s")
            time.sleep(poll)
        for callback in self.on_finished:
            callback(self)
        if self.status.is_failure:
            raise JobFailed(f"job {self.id} {self.status.short}: {self.error_message}")
        return self

    @overload
    def logs(self, follow: Literal[False] = False, node: int | None = None) -> list[api.LogV1]: ...

    @overload
    def logs(self, follow: Literal[True], node: int | None = None) -> Iterator[api.LogV1]: ...

    def logs(
        self, follow: bool = False, node: int | None = None
    ) -> list[api.LogV1] | Iterator[api.LogV1]:
        """Every log line so far (of one node, or all); ``follow=True``: live, to the end."""
        if follow:
            return (f.log for f in self.follow() if node is None or node_of(f.log.replica) == node)
        lines = self._rest.all_logs(self.project_id, self.id)
        return [line for line in lines if node is None or node_of(line.replica) == node]

    def follow(self) -> Iterator[FollowedLog]:
        """Every log line, live, until the job ends."""
        return self._rest.stream_logs(self.project_id, self.id)

    def history(self) -> list[tuple[spec.TrainingJobStatus, str]]:
        if not self._rest.local_extensions:
            return [(self.status, self._wire.updated_at.isoformat())]
        return self._rest.history(self.project_id, self.id)

    def metrics(self) -> api.GetTrainingJobMetricsResponseV1:
        return self._rest.metrics(self.project_id, self.id)

    def user_metrics(self) -> list[dict[str, Any]]:
        """What the job recorded with ``bt_jupyter.runtime.log_metrics``."""
        return self._rest.user_metrics(self.project_id, self.id)

    def checkpoints(self) -> list[api.TrainingJobCheckpointV1]:
        """Model checkpoints, oldest first (``.``: the files at the checkpoint root)."""
        return self._rest.checkpoints(self.project_id, self.id)

    def outputs(self, sync_timeout: float = SYNC_TIMEOUT_S) -> dict[str, Any]:
        """The variables the job saved with ``--out``; raises
        :class:`~bt_jupyter.client.OutputsMissing` when it was given ``--out`` and they are
        not there. Waits (up to ``sync_timeout``) for Baseten's checkpoint sync."""
        return self._rest.outputs(self.project_id, self.id, self.expected_outputs, sync_timeout)

    def stop(self) -> Job:
        self._wire = self._rest.stop_job(self.project_id, self.id)
        return self

    def recreate(self) -> Job:
        recreated = self._rest.recreate_job(self.project_id, self.id)
        return Job(self.client, recreated, self.base_image, self.expected_outputs)

    def deploy(
        self,
        checkpoint: str = "latest",
        name: str | None = None,
        model: Bundle | None = None,
        port: int | None = None,
        *,
        gpu: str | None = None,
        hf_secret: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Deployment:
        """Serve a checkpoint. Locally: a Hugging Face folder with OpenAI-compatible
        completions, or any checkpoint through a ``class Model`` bundle (``%%bt_model``).
        On Baseten: a LoRA or full checkpoint on vLLM, on the ``gpu`` given or the one the
        job trained on, with ``hf_secret`` (a Baseten secret's name) as ``HF_TOKEN``."""
        if self._rest.local_extensions:
            if gpu or hf_secret or env:
                raise BtJupyterError(
                    "gpu=, hf_secret= and env= choose Baseten's serving; the local backend "
                    "serves on this machine without them"
                )
            artifact = self._rest.upload_artifact(model.archive)[0] if model else None
            wire = self._rest.create_deployment(self.id, checkpoint, name, artifact, port)
            return LocalDeployment(self.client, wire)
        if model is not None or port is not None:
            raise BtJupyterError(
                "Baseten deploys checkpoints on vLLM: model= and port= are for the local "
                "backend (package a class Model with `truss push` for custom serving)"
            )
        from bt_jupyter.cloud import deploy as cloud_deploy

        # the checkpoint's files must be in storage before Baseten can serve them
        self._wire = self._rest.wait_checkpoints_synced(self.project_id, self.id)
        plan = cloud_deploy.plan(self._rest, self._wire, checkpoint, name, gpu, hf_secret, env)
        created = cloud_deploy.create(self._rest, plan.request)
        if created.model_version is None:
            raise BtJupyterError(f"Baseten created no model version for {plan.model_name}")
        served = plan.checkpoint.checkpoint_id if plan.lora_rank is not None else None
        return CloudDeployment(
            self.client, created.model_version, plan.checkpoint.checkpoint_id, served
        )

    def summary(self) -> str:
        """A few lines for terminals and nbconvert runs."""
        compute = f"{self.node_count} x {self.instance_type.name}"
        lines = [f"Job {self.id} ({self.name or 'unnamed'}) in {self.project}: {self.status.short}"]
        lines.append(f"  backend {self.client.backend}, compute {compute}")
        if self.error_message:
            lines.append(f"  error: {self.error_message}")
        if self.notice:
            lines.append(f"  note: {self.notice}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.summary())
