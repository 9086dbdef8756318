"""bt_jupyter's own service: artifacts, log follow, status history and deployments are its
``/v1/local/`` extensions, which Baseten's API does not have."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterator

from bt_jupyter import api, spec
from bt_jupyter.backends.base import After, DeployRequest, JobPage, LinesBatch
from bt_jupyter.client import ApiClient, FollowedLog, LogLine
from bt_jupyter.deployments import Deployment, LocalDeployment
from bt_jupyter.errors import BtJupyterError, DeployError

#: Ports a local deployment may listen on: below 1024 only root may bind.
DEPLOY_PORTS = range(1024, 65536)


def _check_port(port: int | None) -> None:
    """One line for a port no deployment can listen on, before anything is sent."""
    if port is None:
        return
    if isinstance(port, bool) or not isinstance(port, int) or port not in DEPLOY_PORTS:
        shown = repr(port)[:40]
        raise DeployError(
            f"port {shown} cannot be used: a local deployment listens on a port from "
            f"{DEPLOY_PORTS.start} to {DEPLOY_PORTS.stop - 1} (lower ones need root); "
            "leave it out to get a free one"
        )


class LocalBackend:
    name = "local"
    bills = False
    follows_by_cursor = True
    refused_key_advice: str | None = (
        "the local training service refused its key (it was restarted?); try again"
    )
    secret_advice = "Store it with `bt-jupyter secrets set {name}` (or %bt_secret set {name})."
    #: Live sessions: the nodes' kernels listen on this machine's loopback.
    kernels_on_this_machine = True

    def __init__(self, rest: ApiClient) -> None:
        self.rest = rest

    def upload(self, archive: bytes) -> api.CreateTrainingJobS3Artifact:
        return self.rest.upload_artifact(archive)[0]

    def team_id(self, team: str) -> str:
        return team  # the local service takes a team's name or id as it is

    def prepare(self, job: spec.TrainingJob, project: str) -> spec.TrainingJob:
        return job  # the runner resolves "latest" itself, skipping the --out folder

    def history(self, job: api.TrainingJobV1) -> list[tuple[spec.TrainingJobStatus, str]]:
        return self.rest.history(job.training_project_id, job.id)

    def follow(self, job: api.TrainingJobV1) -> Iterator[FollowedLog]:
        return self.rest.follow_logs(job.training_project_id, job.id)  # long-poll, cursor

    def read_logs(
        self, job: api.TrainingJobV1, node: int | None, follow: bool
    ) -> Iterator[LogLine]:
        return self.rest.read_log(job.training_project_id, job.id, node=node, follow=follow)

    def log_batches(
        self, job: api.TrainingJobV1, tail: int, keep_containing: str
    ) -> Iterator[LinesBatch]:
        for batch in self.rest.follow_batches(
            job.training_project_id, job.id, tail=tail, keep_containing=keep_containing
        ):
            yield list(batch.logs), batch.skipped

    def job_page(
        self,
        project_id: str | None,
        statuses: list[spec.TrainingJobStatus] | None,
        limit: int | None,
        after: After | None,
    ) -> JobPage:
        wire = self.rest.job_page(project_id, statuses, limit, after)
        counts: Counter[spec.TrainingJobStatus] = Counter()
        for status, count in wire.status_counts.items():
            counts[spec.TrainingJobStatus.from_wire(status)] += count
        return JobPage(wire.training_jobs, wire.total, dict(counts), wire.more)

    def deploy(self, job: api.TrainingJobV1, request: DeployRequest) -> Deployment:
        if request.gpu or request.hf_secret or request.env:
            raise BtJupyterError(
                "gpu=, hf_secret= and env= choose Baseten's serving; the local backend "
                "serves on this machine without them"
            )
        _check_port(request.port)
        archive = request.model_archive
        artifact = self.rest.upload_artifact(archive)[0] if archive is not None else None
        wire = self.rest.create_deployment(
            job.id, request.checkpoint, request.name, artifact, request.port
        )
        return LocalDeployment(self.rest, wire)

    def deployments(self, job_id: str) -> list[Deployment]:
        return [
            LocalDeployment(self.rest, w) for w in self.rest.deployments() if w.job_id == job_id
        ]

    def ssh_proxy_tls(self) -> ssl.SSLContext:
        """Trust exactly the local proxy's self-signed certificate (asked of the service,
        over the API key)."""
        pem = self.rest.request("GET", "/v1/local/ssh/proxy_certificate").text
        return ssl.create_default_context(cadata=pem)
