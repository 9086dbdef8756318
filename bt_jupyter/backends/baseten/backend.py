"""Baseten's cloud: what its service needs that the local one does not (S3 upload with
blob credentials, team names, "latest" named before submitting, vLLM deploys)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

from bt_jupyter import api, spec
from bt_jupyter.backends.base import After, DeployRequest, JobPage, LinesBatch, page_of
from bt_jupyter.backends.baseten import deploy as cloud_deploy
from bt_jupyter.backends.baseten.teams import team_id
from bt_jupyter.backends.baseten.upload import upload_bundle
from bt_jupyter.client import ApiClient, FollowedLog, LogLine
from bt_jupyter.deployments import CloudDeployment, Deployment
from bt_jupyter.errors import BtJupyterError
from bt_jupyter.preflight import latest_checkpoint


class BasetenBackend:
    name = "baseten"
    bills = True
    follows_by_cursor = False
    refused_key_advice: str | None = None
    secret_advice = "Add it under Settings > Secrets in Baseten's app, or name another."
    #: Live sessions: a node's kernel is reached through Baseten's SSH proxy only.
    kernels_on_this_machine = False

    def __init__(self, rest: ApiClient) -> None:
        self.rest = rest

    def upload(self, archive: bytes) -> api.CreateTrainingJobS3Artifact:
        return upload_bundle(self.rest, archive)[0]

    def team_id(self, team: str) -> str:
        return team_id(self.rest, team)  # Baseten's path takes the id; people know names

    def prepare(self, job: spec.TrainingJob, project: str) -> spec.TrainingJob:
        """Replace "latest" checkpoint references by the checkpoint they mean now.

        Baseten resolves "latest" on its side, to the newest top-level folder of the
        checkpoint directory, and the folder a job's ``--out`` values are saved in is
        written last: Baseten would load that instead of the model. So the client
        resolves "latest" itself, skipping that folder, and sends a named checkpoint
        (what is loaded is then also what was printed at submission)."""
        config = job.runtime.load_checkpoint_config
        if config is None or not config.enabled:
            return job
        if not any(isinstance(r, spec.LatestCheckpoint) for r in config.checkpoints):
            return job
        refs: list[spec.CheckpointReference] = []
        for ref in config.checkpoints:
            if isinstance(ref, spec.LatestCheckpoint):
                job_id, name = latest_checkpoint(self.rest, ref, project)
                refs.append(spec.NamedCheckpoint(checkpoint_name=name, job_id=job_id))
            else:
                refs.append(ref)
        runtime = job.runtime.model_copy(
            update={"load_checkpoint_config": config.model_copy(update={"checkpoints": refs})}
        )
        return job.model_copy(update={"runtime": runtime})

    def history(self, job: api.TrainingJobV1) -> list[tuple[spec.TrainingJobStatus, str]]:
        return [(job.status, job.updated_at.isoformat())]  # Baseten keeps only the current

    def follow(self, job: api.TrainingJobV1) -> Iterator[FollowedLog]:
        return self.rest.poll_logs(job.training_project_id, job.id)  # time windows only

    def read_logs(
        self, job: api.TrainingJobV1, node: int | None, follow: bool
    ) -> Iterator[LogLine]:
        lines: Iterator[LogLine]
        if follow:
            lines = (LogLine.of(f.log) for f in self.follow(job))
        else:  # concurrent time windows: the cloud pages 1,000 lines at a time
            lines = map(LogLine.of, self.rest.all_logs(job.training_project_id, job.id))
        return lines if node is None else (line for line in lines if line.node == node)

    def log_batches(
        self, job: api.TrainingJobV1, tail: int, keep_containing: str
    ) -> Iterator[LinesBatch]:
        for followed in self.follow(job):
            yield [followed.log], 0

    def job_page(
        self,
        project_id: str | None,
        statuses: list[spec.TrainingJobStatus] | None,
        limit: int | None,
        after: After | None,
    ) -> JobPage:
        # Baseten's search answers every job at once: the page is cut out here
        return page_of(
            self.rest.search_jobs(project_id=project_id, statuses=statuses), limit, after
        )

    def deploy(self, job: api.TrainingJobV1, request: DeployRequest) -> Deployment:
        if request.model_archive is not None or request.port is not None:
            raise BtJupyterError(
                "Baseten deploys checkpoints on vLLM: model= and port= are for the local "
                "backend (package a class Model with `truss push` for custom serving)"
            )
        # the checkpoint's files must be in storage before Baseten can serve them
        job = self.rest.wait_checkpoints_synced(job.training_project_id, job.id)
        plan = cloud_deploy.plan(
            self.rest,
            job,
            request.checkpoint,
            request.name,
            request.gpu,
            request.hf_secret,
            request.env,
        )
        created = cloud_deploy.create(self.rest, plan.request)
        if created.model_version is None:
            raise BtJupyterError(f"Baseten created no model version for {plan.model_name}")
        served = plan.checkpoint.checkpoint_id if plan.lora_rank is not None else None
        return CloudDeployment(
            self.rest, created.model_version, plan.checkpoint.checkpoint_id, served
        )

    def deployments(self, job_id: str) -> list[Deployment]:
        return []  # Baseten lists models, not the deployments of one training job

    def ssh_proxy_tls(self) -> ssl.SSLContext:
        """The system's trust store, as truss's proxy command checks Baseten's proxy
        (``SSL_CERT_FILE`` names another bundle)."""
        return ssl.create_default_context()
