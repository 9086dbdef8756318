"""The Python API people and magics use: ``Client`` (a backend) and ``Job`` handles.

``Client.local()`` talks to the embedded local service (started on demand);
``Client.baseten()`` to Baseten's cloud with an API key from the argument,
``$BASETEN_API_KEY`` or the ``~/.trussrc`` that Baseten's truss CLI writes. Both speak
the same REST API through :class:`bt_jupyter.client.ApiClient`.
"""

from __future__ import annotations

import collections
import configparser
import os
import re
import sys
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from typing_extensions import Unpack

from bt_jupyter import api, downloads, job_files, preflight, spec
from bt_jupyter.backends import After, Backend, DeployRequest, JobPage, backend_named
from bt_jupyter.cache_summary import CacheView, SortKey, cache_view
from bt_jupyter.checkpoints import Checkpoint
from bt_jupyter.client import (
    SYNC_TIMEOUT_S,
    ApiClient,
    FollowedLog,
    LogBatch,
    LogLine,
    LogPage,
    LogPoller,
    log_text,
)
from bt_jupyter.deployments import Deployment
from bt_jupyter.errors import (
    BtJupyterError,
    InvalidConfigError,
    JobFailed,
    JobTraceback,
    MissingApiKey,
    NoMetrics,
    NoSession,
    NoSuchCheckpoint,
    NoSuchJob,
    NoSuchProject,
)
from bt_jupyter.job_files import JobFile
from bt_jupyter.packaging import Bundle, PackageOptions, runs_bundle, workspace

BASETEN_API_URL = "https://api.baseten.co"
S = spec.TrainingJobStatus


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


OutputsStage = Literal["waiting", "pending", "bound", "not_bound"]


@dataclass(frozen=True)
class OutputsState:
    """Where the ``--out`` variables of a job submitted without ``--wait`` stand in the
    notebook that submitted it: what the widget and the text fallback show.

    ``stage``: "waiting" (the job runs), "pending" (it completed while a cell ran: they
    are bound when the next cell starts), "bound", or "not_bound" (``detail`` says why).
    ``kept`` are names left alone because the notebook re-assigned them after the submit.
    """

    names: tuple[str, ...]
    stage: OutputsStage
    detail: str = ""
    kept: tuple[str, ...] = ()
    #: (name, why) of each value the job could not send back (``runtime.NotSent``).
    not_sent: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        """One line: ``outputs: final → bound`` (or why not)."""
        listed = ", ".join(self.names)
        if self.stage == "waiting":
            return f"outputs: {listed} → bound when the job completes"
        if self.stage == "pending":
            return f"outputs: {listed} → bound when the next cell starts (a cell is running)"
        if self.stage == "not_bound":
            return f"outputs: {listed} → not bound: {self.detail}"
        missing = {name for name, _ in self.not_sent}
        bound = [n for n in self.names if n not in self.kept and n not in missing]
        line = f"outputs: {', '.join(bound)} → bound" if bound else f"outputs: {listed}"
        if self.kept:
            line += f"; kept {', '.join(self.kept)}: {self.detail}"
        for _, why in self.not_sent:
            line += f"; {why}"
        return line


TRACEBACK_START = "Traceback (most recent call last):"
#: How a traceback's last line starts: the exception's (dotted) name, then ``:`` or nothing.
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(:|$)")
_CHAINED = (
    "During handling of the above exception",
    "The above exception was the direct cause",
)


@dataclass
class TracebackHold:
    """Holds back a node's traceback while its log is followed: if the job then fails,
    it is the failure's traceback, shown once with the error after everything the job
    printed (stdout and stderr reach the log by separate pipes, so a line printed just
    before the failure can arrive after it); if the node carries on printing (a second
    later, by the log's clock), the traceback was not fatal and is shown where it was."""

    settle_ns: int = 1_000_000_000
    held: list[api.LogV1] = field(default_factory=list)
    ended_ns: int | None = None  # when the held traceback's exception line came

    def feed(self, log: api.LogV1) -> list[api.LogV1]:
        """The lines to show now, given the next line of the log."""
        message = log.message.rstrip()
        if not self.held:
            if message == TRACEBACK_START:
                self.held, self.ended_ns = [log], None
                return []
            return [log]
        if log.replica != self.held[0].replica:
            return [log]
        if self.ended_ns is None:
            if message and not message[0].isspace() and not _EXCEPTION_LINE.match(message):
                return [log]  # printed before the failure, stored after its first line
            self.held.append(log)
            if message and not message[0].isspace() and message != TRACEBACK_START:
                self.ended_ns = _ns(log)  # the exception line: the traceback is complete
            return []
        if not message or message.startswith(_CHAINED) or message == TRACEBACK_START:
            self.held.append(log)
            self.ended_ns = None if message == TRACEBACK_START else self.ended_ns
            return []
        if _ns(log) - self.ended_ns < self.settle_ns:
            return [log]  # printed with the failure: show it, keep holding the traceback
        shown, self.held = [*self.held, log], []
        return shown

    def finish(self, failed: bool) -> tuple[list[api.LogV1], list[str]]:
        """At the end: (lines still to show, the failure's traceback)."""
        held, self.held = self.held, []
        if not failed:
            return held, []
        lines = [log.message.rstrip() for log in held]
        while lines and not lines[-1]:
            lines.pop()
        return [], lines


def _ns(log: api.LogV1) -> int:
    try:
        return int(log.timestamp)
    except ValueError:
        return 0


if TYPE_CHECKING:
    from bt_jupyter.sweeps import Sweep


def _notebook_namespace() -> dict[str, Any]:
    """The running IPython's user namespace ({} outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return dict(shell.user_ns) if shell is not None else {}


class Client:
    """A backend to train on: ``Client.local()`` (the default) or ``Client.baseten()``."""

    def __init__(self, api_client: ApiClient, backend: str | Backend, key_source: str) -> None:
        self.api, self.key_source = api_client, key_source
        #: The service's differences (``.name``: "local" or "baseten").
        self.backend = backend_named(backend, api_client) if isinstance(backend, str) else backend

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

    @classmethod
    def named(cls, backend: str, home: Path | None = None) -> Client:
        """``Client.local(home)`` or ``Client.baseten()`` by name (``--backend``)."""
        makers: dict[str, Callable[[], Client]] = {
            "local": lambda: cls.local(home),
            "baseten": cls.baseten,
        }
        if backend not in makers:
            raise BtJupyterError(f"unknown backend {backend!r}; use 'local' or 'baseten'")
        return makers[backend]()

    @property
    def url(self) -> str:
        return self.api.base_url

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def projects(self) -> list[api.TrainingProjectV1]:
        return self.api.projects()

    def _project_id(self, name: str) -> str | None:
        return next((p.id for p in self.projects() if p.name == name), None)

    def project(self, name_or_id: str, team: str | None = None) -> api.TrainingProjectV1:
        """One project, by id or name (of ``team`` when given); one clear error when none
        or several (same name in different teams) match."""
        projects = self.projects()
        by_id = [p for p in projects if p.id == name_or_id]
        found = by_id or [
            p for p in projects if p.name == name_or_id and team in (None, p.team_name)
        ]
        if len(found) == 1:
            return found[0]
        where = f" in team {team!r}" if team else ""
        if not found:
            names = ", ".join(sorted({repr(p.name) for p in projects})[:5]) or "none yet"
            raise NoSuchProject(
                f"no project {name_or_id!r}{where} on the {self.backend.name} backend "
                f"(projects: {names})"
            )
        teams = ", ".join(sorted(repr(p.team_name or "") for p in found))
        raise NoSuchProject(f"project {name_or_id!r} is in several teams ({teams}): add --team")

    def cache(
        self,
        project: str,
        team: str | None = None,
        sort: SortKey = "filepath",
        descending: bool = False,
    ) -> CacheView:
        """``truss train cache summarize``: the project's cache (by name or id), sorted."""
        found = self.project(project, team)
        return cache_view(self.api.cache_summary(found.id), sort, descending)

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
        if team is not None:
            team = self.backend.team_id(team)
        # refused here, with what exists, rather than a job that ends DEPLOY_FAILED
        preflight.check_secrets(self.api, project.job, team, self.backend.secret_advice)
        preflight.check_checkpoints(self.api, project.job, project.name)
        remote = self.api.upsert_project(project, team_id=team)
        artifacts = [self.backend.upload(bundle.archive)] if bundle is not None else []
        job = self.backend.prepare(project.job, project.name)
        created = self.api.create_job(remote.id, job, artifacts)
        outputs = [str(n) for n in bundle.manifest.get("outputs") or []] if bundle else []
        return Job(self, created, base_image=job.image.base_image, outputs=outputs)

    def sweep(
        self,
        cell: str,
        grid: Mapping[str, Sequence[Any]],
        project: spec.TrainingProject | str = "default",
        *,
        namespace: Mapping[str, Any] | None = None,
        options: PackageOptions | None = None,
        name: str = "sweep",
        max_parallel: int | None = None,
        max_runs: int = 64,
        team: str | None = None,
    ) -> Sweep:
        """Run ``cell`` once per combination of ``grid`` (``{"lr": [1e-4, 3e-4]}``), each
        with those names set in ``namespace`` (default: the notebook's), as jobs of
        ``project``; ``max_parallel`` at a time. Everything is packaged and checked
        before the first job is submitted."""
        from bt_jupyter.sweeps import Sweep, plan

        if isinstance(project, str):
            project = spec.TrainingProject(
                name=project,
                job=spec.TrainingJob(
                    image=spec.Image(base_image="python:3.11-slim"),
                    runtime=spec.Runtime(
                        checkpointing_config=spec.CheckpointingConfig(enabled=True)
                    ),
                ),
            )
        if namespace is None:
            namespace = _notebook_namespace()
        runs = plan(cell, namespace, grid, options or PackageOptions(), name, max_runs)
        ready = runs_bundle(project, runs[0].bundle)  # every run: the same image, commands
        return Sweep(self, ready, runs, max_parallel, team).start()

    def push(
        self,
        project: Any,
        source_dir: Path | str | None = None,
        **flags: Unpack[spec.PushFlags],
    ) -> Job:
        """Like ``truss train push``: the project's job with ``source_dir`` as its files,
        and the same flags (``entrypoint`` replaces the start commands; each flag that
        replaces a configured value says so, as a warning, as truss does)."""
        pushed, notes = spec.with_push_options(spec.as_training_project(project), **flags)
        for note in notes:
            warnings.warn(f"push: {note}", UserWarning, stacklevel=2)
        folder = Path(source_dir or Path.cwd())
        gathered = workspace.gather(folder, pushed.job.workspace)
        files = {path: file.read_bytes() for path, file in gathered}
        bundle = Bundle(files={p.removeprefix("./"): d for p, d in files.items()}, manifest={})
        return self.submit(pushed, bundle)

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

    def job_page(
        self,
        project: str | None = None,
        status: spec.TrainingJobStatus | str | None = None,
        limit: int | None = None,
        after: After | None = None,
    ) -> tuple[list[Job], JobPage]:
        """The newest ``limit`` jobs (None: all) after ``after``, of one project (by name)
        and/or in one status, and how many match in all: a 10,000-job service shows its
        newest at once."""
        project_id = None
        if project is not None:
            project_id = self._project_id(project)
            if project_id is None:
                return [], JobPage([], 0, {}, False)
        statuses = [S.parse(status)] if status else None
        page = self.backend.job_page(project_id, statuses, limit, after)
        return [Job(self, j) for j in page.jobs], page

    def job(self, job_id: str) -> Job:
        """Re-attach to a job by id (after a kernel restart, from another notebook, ...)."""
        if not isinstance(job_id, str) or not job_id.strip():
            raise NoSuchJob(f"a job id is needed, got {job_id!r}: see Client.jobs() for them")
        found = self.api.search_jobs(job_id=job_id)
        if not found:
            raise NoSuchJob(f"no job {job_id!r} on the {self.backend.name} backend ({self.url})")
        return Job(self, found[0])


class JobLog:
    """A job's log as written so far: each iteration reads it afresh, page by page, so
    ``for line in job.logs()`` runs at the speed of the store in bounded memory."""

    def __init__(self, job: Job, node: int | None) -> None:
        self.job, self.node = job, node

    def __iter__(self) -> Iterator[LogLine]:
        return self.job.client.backend.read_logs(self.job._wire, self.node, follow=False)

    def tail(self, lines: int) -> list[LogLine]:
        """The newest ``lines`` lines, oldest first."""
        return list(collections.deque(self, maxlen=lines)) if lines > 0 else []

    def text(self) -> str:
        """The log as ``truss train logs`` prints it: one ``[node] message`` per line."""
        return "\n".join(log_text(line.replica, line.message) for line in self)

    def __repr__(self) -> str:
        of = f" of node {self.node}" if self.node is not None else ""
        return f"<log{of} of job {self.job.id}: iterate it, or .tail(n), .text(), list(...)>"


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
        #: Where its ``--out`` variables stand in the submitting notebook (None: no
        #: ``--out``, or not submitted from this kernel without ``--wait``).
        self.outputs_state: OutputsState | None = None
        #: Called (with this job), from any thread, each time ``outputs_state`` changes.
        self.on_outputs_state: list[Callable[[Job], None]] = []

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
        """Why the job failed; None while it waits or is CREATED (see :attr:`notice`)."""
        return None if self._notices() else self._wire.error_message

    @property
    def notice(self) -> str | None:
        """A PENDING or QUEUED job's advice about the queue, or what a CREATED or
        DEPLOYING job is doing before its nodes start (mirroring weights, building its
        environment): news, not an error."""
        return self._wire.error_message if self._notices() else None

    def _notices(self) -> bool:
        return self.status.is_waiting or self.status in (
            spec.TrainingJobStatus.CREATED,
            spec.TrainingJobStatus.DEPLOYING,
        )

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
    def wire(self) -> api.TrainingJobV1:
        """The job as the service last answered it (:meth:`refresh` asks again)."""
        return self._wire

    @property
    def compute(self) -> str:
        """``"2 x H100:8"``: nodes and what each one has, as the widget and CLI show it."""
        return f"{self.node_count} x {self.instance_type.name}"

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
            raise self.failure()
        return self

    def set_outputs_state(self, state: OutputsState) -> None:
        """Record where the ``--out`` variables stand and tell the views (any thread)."""
        self.outputs_state = state
        for callback in list(self.on_outputs_state):
            try:
                callback(self)
            except Exception as exc:  # a broken view must not stop the binding
                print(f"bt_jupyter: a view of job {self.id} failed: {exc!r}", file=sys.stderr)

    def failure(self, traceback: list[str] | None = None) -> JobFailed:
        """The error of a failed job, with the traceback its node printed when there is
        one (read from the log's tail unless given)."""
        message = f"job {self.id} {self.status.short}: {self.error_message}"
        if traceback is None:
            traceback = self.remote_traceback()
        return JobTraceback(message, traceback) if traceback else JobFailed(message)

    def remote_traceback(self, tail: int = 400) -> list[str]:
        """The last traceback in the newest ``tail`` lines of the log (empty: none)."""
        start_ms = int(self.created_at.timestamp() * 1000)
        try:
            lines = self.log_window(start_ms, int(time.time() * 1000) + 60_000, tail)
        except BtJupyterError:
            return []
        hold = TracebackHold()
        for line in lines:
            hold.feed(line)
        return hold.finish(failed=True)[1]

    @overload
    def logs(self, follow: Literal[False] = False, node: int | None = None) -> JobLog: ...

    @overload
    def logs(self, follow: Literal[True], node: int | None = None) -> Iterator[LogLine]: ...

    def logs(self, follow: bool = False, node: int | None = None) -> JobLog | Iterator[LogLine]:
        """The log so far (of one node, or all), to iterate; ``follow=True``: every line,
        live, to the job's end. Read in pages: a log of millions of lines is never held."""
        if follow:
            return self.client.backend.read_logs(self._wire, node, follow=True)
        return JobLog(self, node)

    def follow(self) -> Iterator[FollowedLog]:
        """Every log line, live, until the job ends."""
        return self.client.backend.follow(self._wire)

    def history(self) -> list[tuple[spec.TrainingJobStatus, str]]:
        return self.client.backend.history(self._wire)

    def metrics(self) -> api.GetTrainingJobMetricsResponseV1:
        """Each node's CPU, memory, GPU and disk series; :class:`NoMetrics` for a job whose
        nodes never started (waiting, being set up, or DEPLOY_FAILED): there are none."""
        if not self.has_run:
            raise NoMetrics(
                f"job {self.id} is {self.status.short}: its nodes never started, so it has no "
                "metrics" + ("" if self.status.is_terminal else " yet")
            )
        return self._rest.metrics(self.project_id, self.id)

    @property
    def has_run(self) -> bool:
        """Its nodes started (it is RUNNING, or ended after it could run)."""
        never = (S.PENDING, S.QUEUED, S.CREATED, S.DEPLOYING, S.DEPLOY_FAILED)
        return self.status not in never

    def user_metrics(self, node: int | None = 0) -> list[dict[str, Any]]:
        """What the job recorded (``log_metrics``, a ``transformers`` Trainer): the
        leader's records, or ``node``'s, or every node's with ``node=None``."""
        return self._rest.user_metrics(self.project_id, self.id, node)

    def bundle_manifest(self) -> dict[str, Any] | None:
        """The manifest of the cell's bundle (None for a job that is not a cell)."""
        return self._rest.bundle_manifest(self.project_id, self.id)

    def artifact_urls(self) -> list[str]:
        """Presigned URLs of the job's artifacts (its bundle)."""
        return self._rest.job_artifact_urls(self.project_id, self.id)

    def sign_ssh(self, public_key: str, node: int) -> api.SignSSHCertificateResponseV1:
        """A short-lived SSH certificate for ``public_key`` on one node of the job."""
        return self._rest.sign_ssh(self.project_id, self.id, public_key, node)

    def fetch(self, url: str, target: Path) -> Path:
        """One of the job's presigned URLs (a checkpoint file, an artifact) into ``target``."""
        return self._rest.download(url, target)

    def checkpoints(self) -> list[Checkpoint]:
        """Model checkpoints, oldest first (``.``: the files at the checkpoint root); each
        can be downloaded (``.download()``) and loaded (``bt_jupyter.load_hf``)."""
        return [Checkpoint.of(self, c) for c in self._rest.checkpoints(self.project_id, self.id)]

    def checkpoint(self, name: str = "latest") -> Checkpoint:
        """One checkpoint by name (``latest``: the newest); NoSuchCheckpoint names the
        ones there are."""
        found = self.checkpoints()
        if name == "latest" and found:
            return found[-1]
        for checkpoint in found:
            if checkpoint.checkpoint_id == name:
                return checkpoint
        names = ", ".join(c.checkpoint_id for c in found) or "none yet"
        raise NoSuchCheckpoint(f"job {self.id} has no checkpoint {name!r} (it has {names})")

    def files(self, node: int | None = 0) -> list[JobFile]:
        """The files the cell wrote into its working folder (``model.pth``, a plot, a
        ``save_pretrained`` folder's files), kept on the checkpoint volume; each can be
        downloaded (``.download()``) and opened (``.load()``)."""
        return job_files.files_of(self, node)

    def download_files(self, dest: Path | str | None = None, node: int = 0) -> Path:
        """All of :meth:`files` into ``dest`` (default ``./bt_files/<job>/``), laid out
        as the working folder was."""
        return job_files.download_all(self, dest, node)

    def outputs(self, sync_timeout: float = SYNC_TIMEOUT_S) -> dict[str, Any]:
        """The variables the job saved with ``--out`` (a value it could not pickle is a
        :class:`~bt_jupyter.runtime.NotSent` saying why); raises
        :class:`~bt_jupyter.client.OutputsMissing` when it was given ``--out`` and they are
        not there. Waits (up to ``sync_timeout``) for Baseten's checkpoint sync."""
        return self._rest.outputs(self.project_id, self.id, self.expected_outputs, sync_timeout)

    def stop(self) -> Job:
        self._wire = self._rest.stop_job(self.project_id, self.id)
        return self

    def set_priority(self, priority: int) -> Job:
        """A PENDING job's place in the queue: higher priorities start first."""
        self._wire = self._rest.set_priority(self.project_id, self.id, priority)
        return self

    def sessions(self) -> list[api.AuthCodeV1]:
        """The job's open interactive sessions (per node: device code, URL, expiry, working
        directory), as ``truss train logs`` prints them; empty when it has none."""
        return self._rest.auth_codes(self.project_id, self.id)

    def update_sessions(
        self,
        trigger: spec.InteractiveSessionTrigger | str | None = None,
        timeout_minutes: int | None = None,
    ) -> list[str]:
        """``truss train isession --update-…``: change every open session of the job;
        what the service said for each."""
        if trigger is None and timeout_minutes is None:
            raise InvalidConfigError("give a trigger or timeout_minutes to change")
        found = self.sessions()
        if not found:
            raise NoSession(
                f"job {self.id} has no open interactive session ({self.status.short}); "
                "one opens as its trigger says (%%bt_train --interactive on_startup|on_failure)"
            )
        return [
            self._rest.patch_session(
                self.project_id, self.id, s.session_id, trigger, timeout_minutes
            ).message
            for s in found
        ]

    def queue_context(self) -> api.GetTrainingJobQueueContextResponseV1:
        """Why the job waited (or waits) in PENDING: its GPU pool's capacity, the jobs
        that held it and those ahead in the queue, and their status events."""
        return self._rest.queue_context(self.id)

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
        request = DeployRequest(
            checkpoint, name, model.archive if model else None, port, gpu, hf_secret, env
        )
        deployment = self.client.backend.deploy(self._wire, request)
        return deployment

    def deployments(self) -> list[Deployment]:
        """Deployments started from this job that the service lists (the local one does)."""
        return self.client.backend.deployments(self.id)

    def log_batches(self, tail: int, keep_containing: str) -> Iterator[tuple[list[api.LogV1], int]]:
        """The log, live, to the end, in batches: (lines, lines skipped before them).
        Where the service can skip, only the newest ``tail`` lines of a batch and every
        line holding ``keep_containing`` come (so a flood of output never lags a view)."""
        return self.client.backend.log_batches(self._wire, tail, keep_containing)

    def follow_batch(self, cursor: int, poll_timeout: int, tail: int | None) -> LogBatch:
        """One long-poll of the log after ``cursor`` (services that follow by cursor)."""
        batches = self._rest.follow_batches(
            self.project_id, self.id, cursor=cursor, poll_timeout=poll_timeout, tail=tail
        )
        return next(iter(batches))

    def log_before(self, position: int, limit: int, node: int | None = None) -> LogPage:
        """The newest ``limit`` lines before a position (0: the end), oldest first, with
        the positions of the first and last (services that follow by cursor): one
        request however long the log is."""
        return self._rest.log_page(
            self.project_id, self.id, before=position, limit=limit, node=node
        )

    def log_window(self, start_ms: int, end_ms: int, limit: int) -> list[api.LogV1]:
        """The newest ``limit`` lines between two times, oldest first (one request)."""
        window = self._rest.logs(
            self.project_id,
            self.id,
            start_epoch_millis=start_ms,
            end_epoch_millis=end_ms,
            direction=api.SortOrderV1.DESC,
            limit=limit,
        )
        return window[::-1]

    def log_poller(self, since_ms: int) -> LogPoller:
        """A reader of the log by time windows, from ``since_ms`` (see LogPoller)."""
        return LogPoller(self._rest, self.project_id, self.id, since_ms=since_ms)

    def checkpoint_files(self) -> list[api.CheckpointFile]:
        """Every file of every checkpoint, with a presigned URL each."""
        return self._rest.checkpoint_files(self.project_id, self.id)

    def checkpoint_urls(self, folder: Path | str | None = None) -> Path:
        """``truss train get_checkpoint_urls``: write ``{project}_{job}_checkpoints.json``
        (every checkpoint file's presigned URL) into ``folder``; its path."""
        return downloads.write_checkpoint_urls(self, folder)

    def download_artifact(self, folder: Path | str | None = None, unzip: bool = True) -> Path:
        """``truss train download``: the job's own files (its bundle), unpacked into
        ``folder/{project}_{job}/`` (or kept as a ``.tgz``); the path."""
        return downloads.download_artifact(self, folder, unzip)

    def summary(self) -> str:
        """A few lines for terminals and nbconvert runs."""
        compute = self.compute
        lines = [f"Job {self.id} ({self.name or 'unnamed'}) in {self.project}: {self.status.short}"]
        lines.append(f"  backend {self.client.backend.name}, compute {compute}")
        if self.error_message:
            lines.append(f"  error: {self.error_message}")
        if self.notice:
            lines.append(f"  note: {self.notice}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.summary())
