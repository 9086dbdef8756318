"""The Backend protocol and what its methods take: what each service implements."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient, FollowedLog, LogLine
from bt_jupyter.deployments import Deployment

#: (new lines, lines skipped before them) of a followed log.
LinesBatch = tuple[list[api.LogV1], int]


@dataclass(frozen=True)
class DeployRequest:
    """What ``Job.deploy`` was asked; each backend takes the fields it serves with."""

    checkpoint: str = "latest"
    name: str | None = None
    model_archive: bytes | None = None
    port: int | None = None
    gpu: str | None = None
    hf_secret: str | None = None
    env: dict[str, str] | None = None


#: Where a page of jobs starts: after this job (its id, and its creation time in epoch
#: seconds, for when it was deleted meanwhile).
After = tuple[str, float]


@dataclass(frozen=True)
class JobPage:
    """A page of jobs, newest first, and how many match in all (in each status)."""

    jobs: list[api.TrainingJobV1]
    total: int
    status_counts: dict[spec.TrainingJobStatus, int]
    #: Whether older jobs match too (a next page).
    more: bool


def page_of(found: list[api.TrainingJobV1], limit: int | None, after: After | None) -> JobPage:
    """A page cut out of every matching job, newest first (services that only search)."""
    start = 0
    if after is not None:
        ids = [job.id for job in found]
        if after[0] in ids:
            start = ids.index(after[0]) + 1  # new jobs do not move a page
        else:  # its job was deleted: the first created before it
            older = (i for i, job in enumerate(found) if job.created_at.timestamp() < after[1])
            start = next(older, len(found))
    end = len(found) if limit is None else start + limit
    counts = Counter(job.status for job in found)
    return JobPage(found[start:end], len(found), dict(counts), end < len(found))


class Backend(Protocol):
    """A service that runs training jobs: the same REST API, and what differs around it."""

    #: ``"local"`` or ``"baseten"``: what people read.
    name: str
    #: The one REST client of Baseten's training API, for this service.
    rest: ApiClient
    #: Whether a job's GPUs cost money (the widget's cost estimate).
    bills: bool
    #: Whether the service follows a log from a cursor (else only by time windows).
    follows_by_cursor: bool
    #: What to say when the service refuses a key it issued itself (None: the key is the
    #: user's, and the error says how to set it).
    refused_key_advice: str | None
    #: How to create a missing secret (``{name}``: the secret's name).
    secret_advice: str
    #: A live session's kernels listen on this machine (their ports may be used as they
    #: are, once their key was read over SSH).
    kernels_on_this_machine: bool

    def upload(self, archive: bytes) -> api.CreateTrainingJobS3Artifact:
        """Store a bundle where this service's jobs read it (sent once per content)."""
        ...

    def team_id(self, team: str) -> str:
        """The id of a team given by name or id."""
        ...

    def prepare(self, job: spec.TrainingJob, project: str) -> spec.TrainingJob:
        """The job as this service must receive it (e.g. "latest" named beforehand)."""
        ...

    def history(self, job: api.TrainingJobV1) -> list[tuple[spec.TrainingJobStatus, str]]:
        """The job's status changes with their times, as far as the service keeps them."""
        ...

    def follow(self, job: api.TrainingJobV1) -> Iterator[FollowedLog]:
        """Every line of the job, live, until it ends; each once."""
        ...

    def read_logs(
        self, job: api.TrainingJobV1, node: int | None, follow: bool
    ) -> Iterator[LogLine]:
        """The job's lines (of one node, or all) in order, each once: what was written so
        far, or (``follow``) live to the job's end; read in pages, never held whole."""
        ...

    def log_batches(
        self, job: api.TrainingJobV1, tail: int, keep_containing: str
    ) -> Iterator[LinesBatch]:
        """The job's log, live, to its end: at most the newest ``tail`` lines of each
        batch plus every line holding ``keep_containing`` where the service can skip."""
        ...

    def job_page(
        self,
        project_id: str | None,
        statuses: list[spec.TrainingJobStatus] | None,
        limit: int | None,
        after: After | None,
    ) -> JobPage:
        """The newest ``limit`` jobs (None: all) after ``after``, of a project or all."""
        ...

    def deploy(self, job: api.TrainingJobV1, request: DeployRequest) -> Deployment:
        """Serve a checkpoint of ``job``."""
        ...

    def deployments(self, job_id: str) -> list[Deployment]:
        """The deployments started from ``job_id`` that this service lists."""
        ...

    def ssh_proxy_tls(self) -> ssl.SSLContext:
        """How to check the SSH proxy's TLS certificate (live sessions)."""
        ...
