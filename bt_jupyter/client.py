"""The one HTTP client for Baseten's training API, for the local service and the cloud.

Built on httpx with a transport seam (``transport=``) for tests. Calls are typed by the
models of :mod:`bt_jupyter.api`. Failures that may be transient (connection errors,
429, 5xx) are retried with exponential backoff and full jitter, but a job is never
created twice because of a retry: creates carry an ``Idempotency-Key`` that the local
service honours, and against a service that does not, an ambiguous create is not retried.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import itertools
import json
import os
import pickle
import random
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import httpx
import orjson
from pydantic import BaseModel

from bt_jupyter import api, log_windows, runtime, serving_api, spec
from bt_jupyter.errors import (  # noqa: F401  (re-exported)
    ApiError,
    AuthError,
    BtJupyterError,
    CheckpointsSyncing,
    ConnectionFailed,
    GraphQLError,
    NotFound,
    OutputsMissing,
)

M = TypeVar("M", bound=BaseModel)
LogKey = tuple[str, str, str | None]
MODEL_URL_ENV = "BT_JUPYTER_BASETEN_MODEL_URL"

#: Polls re-read this far back, as truss does: lines can reach Baseten's log store after
#: newer ones (processing delays, clock skew between nodes).
LOG_LOOK_BACK_MS = 60_000
#: Keep polling this long after a job ended, as truss does, for its last lines.
LOG_GRACE_S = 10.0
#: Folders of ``--out`` values under the checkpoint root: never a model checkpoint.
OUTPUTS_DIRS = frozenset({runtime.OUTPUTS_DIR, ".bt_outputs"})
#: How long to wait for Baseten to finish syncing checkpoints before reading them.
SYNC_TIMEOUT_S = 600.0

#: A follower keeps trying this long to reach a service that went away (it may be
#: restarting, on another port) before it gives up; its cursor is kept meanwhile.
FOLLOW_RECONNECT_S = 60.0
#: Lines per page of the local service's bulk log read (about 3 MB for short lines).
LOG_PAGE_LINES = 50_000
FOLLOW_RETRY_S = 0.5
#: How often one request may follow its service to a new address (restarts meanwhile).
MAX_MOVES = 3
#: Where a client that found no service yet points until it finds one (never answers).
NO_SERVICE_URL = "http://127.0.0.1:0"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def log_text(replica: str | None, message: str) -> str:
    """How a log line reads as text: ``[node 1] message``, or ``[runner] message`` for
    the lines of no node (the local runner's own)."""
    node = node_of(replica)
    return f"[{'runner' if node is None else f'node {node}'}] {message}"


#: Where a packaged cell's manifest lies in its bundle.
MANIFEST_PATH = f"{runtime.BUNDLE_DIR}/manifest.json"


class _Readable(io.RawIOBase):
    """A file over an iterator of byte chunks, for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def node_of(replica: str | None) -> int | None:
    """The node rank of a log line's ``replica``: ``"1"`` locally; on Baseten a replica
    name ending in its rank (``...-1``). None for lines of no node (the runner's)."""
    if not replica:
        return None
    if replica.isdigit():
        return int(replica)
    tail = replica.rstrip("0123456789")
    digits = replica[len(tail) :]
    return int(digits) if digits and tail[-1:] in ("-", "_", "r") else None


def is_model_checkpoint(checkpoint_id: str) -> bool:
    """False for the folder bt_jupyter keeps ``--out`` values in."""
    return checkpoint_id not in OUTPUTS_DIRS


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_delay)
            except ValueError:
                pass
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class ServiceLocator(Protocol):
    """Finds a service again that stopped answering (restarted, perhaps on another port):
    the local service's ``service.json``, read again (see ``daemon.Locator``)."""

    def find(self) -> tuple[str, str] | None:
        """(base url, api key) of the service now; None when it cannot be found."""

    @property
    def advice(self) -> str:
        """What to do when it cannot be found (how to start it)."""


@dataclass(frozen=True)
class LogBatch:
    """One response of :meth:`ApiClient.follow_batches`."""

    logs: list[api.LocalFollowedLogV1]
    skipped: int
    status: spec.TrainingJobStatus


class LogLine(NamedTuple):
    """One log line as :meth:`Job.logs` yields it: a tuple, so a million of them are
    cheap to make (a pydantic model per line costs ten times the read itself)."""

    #: Epoch nanoseconds.
    timestamp: int
    message: str
    #: The node's rank; None for the service's own lines (the runner's).
    node: int | None
    #: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
    level: str

    @property
    def replica(self) -> str | None:
        """The node as Baseten's API names it (``"0"``), as on :class:`api.LogV1`."""
        return None if self.node is None else str(self.node)

    @classmethod
    def of(cls, line: api.LogV1) -> LogLine:
        level = line.level.value if line.level is not None else "INFO"
        return cls(int(line.timestamp), line.message, node_of(line.replica), level)


#: A stored level's name (one it does not know, from a row edited by hand: INFO).
_LEVEL_NAMES = dict(enumerate(api.LOG_LEVELS))
#: A LogLine from a tuple, in C (``LogLine._make`` runs Python code per line).
_new_line = functools.partial(tuple.__new__, LogLine)


@dataclass(frozen=True)
class LogPage:
    """One answer of the local service's bulk log read, still as columns."""

    first: int
    last: int
    count: int
    done: bool
    #: Where the next page of as many lines ends (0: not full yet, or not asked).
    next_end: int
    status: spec.TrainingJobStatus
    ts: list[int]
    nodes: list[int | None]
    levels: list[int]
    messages: list[str]

    @classmethod
    def parse(cls, content: bytes) -> LogPage:
        body = orjson.loads(content)
        return cls(
            first=body["first"],
            last=body["last"],
            count=body["count"],
            done=body["done"],
            next_end=body.get("next_end", 0),
            status=spec.TrainingJobStatus.from_wire(body["status"]),
            ts=body["ts"],
            nodes=body["nodes"],
            levels=body["levels"],
            messages=body["messages"],
        )

    def lines(self) -> Iterator[LogLine]:
        """The page's lines, made in C loops (zip, map): no Python code runs per line."""
        levels = map(_LEVEL_NAMES.get, self.levels, itertools.repeat("INFO"))
        return map(_new_line, zip(self.ts, self.messages, self.nodes, levels, strict=True))


@dataclass(frozen=True)
class FollowedLog:
    """A log line from :meth:`ApiClient.follow_logs`, with the job status when it was read."""

    log: api.LogV1
    status: spec.TrainingJobStatus


def _message(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip() or response.reason_phrase), None
    if isinstance(body, dict):
        text = body.get("message") or body.get("detail") or body.get("error") or str(body)
        return str(text), body.get("code")
    return str(body), None


def _absolute(path: str) -> bool:
    """A full URL (GraphQL, a model's host), not a path under the client's base URL."""
    return "://" in path


def _graphql_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    host = "app." + parts.netloc[4:] if parts.netloc.startswith("api.") else parts.netloc
    return urllib.parse.urlunsplit((parts.scheme, host, "/graphql/", "", ""))


def model_url(base_url: str, model_id: str) -> str:
    """Where a model's deployments answer: ``https://model-{id}.api.baseten.co``, or the
    ``$BT_JUPYTER_BASETEN_MODEL_URL`` template (``{model_id}`` in it) for stand-ins."""
    template = os.environ.get(MODEL_URL_ENV)
    if template:
        return template.format(model_id=model_id).rstrip("/")
    parts = urllib.parse.urlsplit(base_url)
    host = f"model-{model_id}.{parts.netloc}"
    return urllib.parse.urlunsplit((parts.scheme, host, "", "", ""))


class ApiClient:
    """``ApiClient(base_url, api_key)``; ``ApiClient.local()`` starts and uses the local service."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        retry_creates: bool = False,
        graphql_url: str | None = None,
        locator: ServiceLocator | None = None,
    ) -> None:
        """``retry_creates``: the service honours Idempotency-Key, so a create whose
        answer was lost may be sent again (bt_jupyter's local service does).
        ``graphql_url``: Baseten's GraphQL endpoint, by default the app host's ``/graphql/``
        (``api.baseten.co`` -> ``app.baseten.co``). ``locator``: where to find the service
        again when a connection is refused (the local service, after a restart)."""
        self.base_url = base_url.rstrip("/")
        self.locator = locator
        self._relocating = threading.Lock()
        self._lost = False  # the locator found no service the last time it looked
        self.graphql_url = graphql_url or _graphql_url(self.base_url)
        # GraphQL and model endpoints take the key the way Baseten's CLI sends it
        self._key_header = {"Authorization": f"Api-Key {api_key}"}
        self.retry = retry or RetryPolicy()
        self.retry_creates = retry_creates
        self._manifests: dict[str, dict[str, Any]] = {}  # by job id: they never change
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "bt_jupyter"},
            timeout=timeout,
            transport=transport,
        )
        # URLs that carry their own signature (presigned files) or need no key (a local
        # deployment's port): no Authorization header at all, the same transport.
        self._plain = httpx.Client(
            headers={"User-Agent": "bt_jupyter"}, timeout=timeout, transport=transport
        )

    @classmethod
    def local(cls, home: Path | None = None, *, autostart: bool = True, **kwargs: Any) -> ApiClient:
        """A client of the local service of ``home``, which it finds again after a restart.
        ``autostart``: start the service now and whenever it is found not running; without
        it, only use a service someone started (``bt-jupyter local start``), when it runs."""
        from bt_jupyter.local.daemon import Locator
        from bt_jupyter.local.home import Home

        locator = Locator(Home(home) if home else Home.default(), start=autostart)
        url, key = locator.find() or (NO_SERVICE_URL, "")
        kwargs.setdefault("retry_creates", True)
        return cls(url, key, locator=locator, **kwargs)

    def close(self) -> None:
        self._http.close()
        self._plain.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry_ambiguous: bool | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send with retries. ``retry_ambiguous``: may a request that might have been
        processed (timeout, 5xx) be sent again? Defaults to yes for idempotent methods."""
        if retry_ambiguous is None:
            retry_ambiguous = method in IDEMPOTENT_METHODS
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        last: Exception | None = None
        attempt = moves = 0
        while attempt < self.retry.attempts:
            tried = self.base_url
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    params=clean,
                    content=content,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc  # never reached the service: always safe to send again
                if moves < MAX_MOVES and not _absolute(path) and self._relocate(tried):
                    moves += 1
                    continue  # found elsewhere (restarted on a new port): at once, no attempt
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if not retry_ambiguous:
                    raise ConnectionFailed(
                        f"{method} {path}: the connection failed after the request was sent "
                        f"({type(exc).__name__}); it may or may not have taken effect"
                    ) from None
                last = exc
            else:
                retryable = response.status_code == 429 or (
                    response.status_code in RETRY_STATUSES and retry_ambiguous
                )
                if not retryable or attempt == self.retry.attempts - 1:
                    return self._check(response)
                time.sleep(self.retry.delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            if attempt < self.retry.attempts - 1:
                time.sleep(self.retry.delay(attempt))
            attempt += 1
        if self._lost:
            assert self.locator is not None
            where = "the local service" if self.base_url == NO_SERVICE_URL else self.base_url
            raise ConnectionFailed(
                f"could not reach {where} after {self.retry.attempts} attempts: "
                f"{self.locator.advice}"
            )
        raise ConnectionFailed(
            f"could not reach {self.base_url} ({type(last).__name__}: {last}) after "
            f"{self.retry.attempts} attempts"
        )

    def _relocate(self, tried: str) -> bool:
        """After a refused connection to the service at ``tried``: look it up again (the
        locator may start it). True when it is now elsewhere and the request should go
        again at once; False to wait and retry as usual."""
        if self.locator is None:
            return False
        with self._relocating:  # one lookup (and one start) at a time, for every thread
            if self.base_url != tried:
                return True  # another thread found it while this one waited
            found = self.locator.find()
            self._lost = found is None
            if found is None:
                return False
            url, key = found[0].rstrip("/"), found[1]
            if url == self.base_url:
                return False
            self.base_url = url
            self._http.base_url = httpx.URL(url)
            self._http.headers["Authorization"] = f"Bearer {key}"
            self._key_header = {"Authorization": f"Api-Key {key}"}
            return True

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        message, code = _message(response)
        if response.status_code in (401, 403):
            raise AuthError(response.status_code, message, code)
        if response.status_code == 404:
            raise NotFound(response.status_code, message, code)
        raise ApiError(response.status_code, message, code)

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self.request("GET", path, params=params).json())

    def _post(self, path: str, body: BaseModel | None, model: type[M], **kw: Any) -> M:
        payload = body.model_dump(mode="json") if body is not None else None
        return model.model_validate(self.request("POST", path, json=payload, **kw).json())

    @staticmethod
    def _job_path(project_id: str, job_id: str) -> str:
        return f"/v1/training_projects/{project_id}/jobs/{job_id}"

    # ------------------------------------------------------------------ projects

    def upsert_project(
        self, project: spec.TrainingProject | str, team_id: str | None = None
    ) -> api.TrainingProjectV1:
        if isinstance(project, str):
            body = api.UpsertTrainingProjectRequestV1(
                training_project=api.UpsertTrainingProjectV1(name=project)
            )
        else:
            body = api.UpsertTrainingProjectRequestV1.of(spec.as_training_project(project))
        path = f"/v1/teams/{team_id}/training_projects" if team_id else "/v1/training_projects"
        # an upsert by name is idempotent: safe to resend
        answer = self._post(path, body, api.UpsertTrainingProjectResponseV1, retry_ambiguous=True)
        return answer.training_project

    def projects(self) -> list[api.TrainingProjectV1]:
        return self._get(
            "/v1/training_projects", api.ListTrainingProjectsResponseV1
        ).training_projects

    def project(self, project_id: str) -> api.TrainingProjectV1:
        path = f"/v1/training_projects/{project_id}"
        return self._get(path, api.GetTrainingProjectResponseV1).training_project

    def delete_project(self, project_id: str) -> api.TrainingProjectTombstoneV1:
        response = self.request("DELETE", f"/v1/training_projects/{project_id}")
        return api.TrainingProjectTombstoneV1.model_validate(response.json())

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        project_id: str,
        job: spec.TrainingJob,
        artifacts: list[api.CreateTrainingJobS3Artifact] | None = None,
        truss_user_env: api.TrussUserEnv | None = None,
    ) -> api.TrainingJobV1:
        body = api.CreateTrainingJobRequestV1(
            training_job=api.CreateTrainingJobV1.of(job, artifacts, truss_user_env)
        )
        answer = self._post(
            f"/v1/training_projects/{project_id}/jobs",
            body,
            api.CreateTrainingJobResponseV1,
            headers={"Idempotency-Key": uuid.uuid4().hex},
            retry_ambiguous=self.retry_creates,
        )
        return answer.training_job

    def jobs(self, project_id: str) -> list[api.TrainingJobV1]:
        path = f"/v1/training_projects/{project_id}/jobs"
        return self._get(path, api.ListTrainingJobsResponseV1).training_jobs

    def job(self, project_id: str, job_id: str) -> api.GetTrainingJobResponseV1:
        return self._get(self._job_path(project_id, job_id), api.GetTrainingJobResponseV1)

    def search_jobs(
        self,
        project_id: str | None = None,
        job_id: str | None = None,
        statuses: list[spec.TrainingJobStatus] | None = None,
    ) -> list[api.TrainingJobV1]:
        body = api.SearchTrainingJobsRequestV1(
            project_id=project_id,
            job_id=job_id,
            statuses=[s.value for s in statuses] if statuses else None,
        )
        return self._post(
            "/v1/training_jobs/search", body, api.SearchTrainingJobsResponseV1, retry_ambiguous=True
        ).training_jobs

    def job_page(
        self,
        project_id: str | None,
        statuses: list[spec.TrainingJobStatus] | None,
        limit: int | None,
        after: tuple[str, float] | None = None,
    ) -> api.LocalJobPageV1:
        """A page of jobs, newest first (the local service's ``/v1/local/training_jobs``)."""
        params: dict[str, Any] = {"limit": limit or 0, "status": [s.value for s in statuses or []]}
        if project_id is not None:
            params["project_id"] = project_id
        if after is not None:
            params["after"], params["after_created"] = after
        return self._get("/v1/local/training_jobs", api.LocalJobPageV1, **params)

    def stop_job(self, project_id: str, job_id: str) -> api.TrainingJobV1:
        path = f"{self._job_path(project_id, job_id)}/stop"
        body = api.StopTrainingJobRequestV1()
        return self._post(
            path, body, api.StopTrainingJobResponseV1, retry_ambiguous=True
        ).training_job

    def recreate_job(self, project_id: str, job_id: str) -> api.TrainingJobV1:
        path = f"{self._job_path(project_id, job_id)}/recreate"
        return self._post(path, None, api.RecreateTrainingJobResponseV1).training_job

    def delete_job(self, project_id: str, job_id: str) -> api.TrainingJobTombstoneV1:
        response = self.request("DELETE", self._job_path(project_id, job_id))
        return api.TrainingJobTombstoneV1.model_validate(response.json())

    def set_priority(self, project_id: str, job_id: str, priority: int) -> api.TrainingJobV1:
        body = api.UpdateTrainingJobRequestV1(priority=priority)
        response = self.request(
            "PATCH",
            self._job_path(project_id, job_id),
            json=body.model_dump(),
            retry_ambiguous=True,
        )
        return api.UpdateTrainingJobResponseV1.model_validate(response.json()).training_job

    # ------------------------------------------------------------------ interactive sessions

    def auth_codes(self, project_id: str, job_id: str) -> list[api.AuthCodeV1]:
        """The job's open interactive sessions, one per node, with their device codes."""
        path = f"{self._job_path(project_id, job_id)}/auth_codes"
        return self._get(path, api.GetAuthCodesResponseV1).auth_codes

    def patch_session(
        self,
        project_id: str,
        job_id: str,
        session_id: str,
        trigger: spec.InteractiveSessionTrigger | str | None = None,
        timeout_minutes: int | None = None,
    ) -> api.PatchInteractiveSessionResponseV1:
        """Change a session's trigger, or add minutes to it (-1: ten years)."""
        body = api.PatchInteractiveSessionRequestV1(
            trigger=trigger, timeout_minutes=timeout_minutes
        )
        response = self.request(
            "PATCH",
            f"{self._job_path(project_id, job_id)}/interactive_sessions/{session_id}",
            json=body.model_dump(mode="json", exclude_none=True),
            retry_ambiguous=True,
        )
        return api.PatchInteractiveSessionResponseV1.model_validate(response.json())

    def sign_ssh(
        self, project_id: str, job_id: str, public_key: str, node: int
    ) -> api.SignSSHCertificateResponseV1:
        """A short-lived certificate for ``public_key`` on one node of the job, with the
        JWT and address of the SSH proxy that admits it (what ``truss ssh`` signs)."""
        body = api.SignSSHCertificateRequestV1(public_key=public_key, replica_id=str(node))
        response = self.request(
            "POST", f"{self._job_path(project_id, job_id)}/ssh/sign", json=body.model_dump()
        )
        return api.SignSSHCertificateResponseV1.model_validate(response.json())

    # ------------------------------------------------------------------ capacity, queue

    def capacity(self) -> api.GetTrainingGpuCapacityResponseV1:
        """GPU pools: their limits and the GPUs active jobs hold (org and per team)."""
        return self._get("/v1/training/capacity", api.GetTrainingGpuCapacityResponseV1)

    def set_team_capacity(
        self, team_id: str, gpu_type: str, max_gpus: int
    ) -> api.TeamTrainingGpuCapacityItemV1:
        """Cap the GPUs of a type that a team's jobs may hold at once (org admins)."""
        body = api.PatchTeamTrainingGpuCapacityRequestV1(
            team_id=team_id, gpu_type=gpu_type, max_gpus=max_gpus
        )
        response = self.request(
            "PATCH", "/v1/training/capacity", json=body.model_dump(), retry_ambiguous=True
        )
        return api.PatchTeamTrainingGpuCapacityResponseV1.model_validate(
            response.json()
        ).team_gpu_capacity

    def queue_context(self, job_id: str) -> api.GetTrainingJobQueueContextResponseV1:
        """Why a job waited (or waits) in PENDING: its pool, who held it, who was ahead."""
        return self._get(
            f"/v1/training/jobs/{job_id}/queue_context", api.GetTrainingJobQueueContextResponseV1
        )

    def history(self, project_id: str, job_id: str) -> list[tuple[spec.TrainingJobStatus, str]]:
        """Every status reached and when (local service extension)."""
        path = f"/v1/local/training_projects/{project_id}/jobs/{job_id}/history"
        body = self.request("GET", path).json()
        return [(spec.TrainingJobStatus(h["status"]), h["at"]) for h in body["history"]]

    # ------------------------------------------------------------------ logs

    def logs(
        self,
        project_id: str,
        job_id: str,
        *,
        start_epoch_millis: int | None = None,
        end_epoch_millis: int | None = None,
        direction: api.SortOrderV1 | None = None,
        limit: int = 500,
        min_level: api.LogLevelV1 | None = None,
    ) -> list[api.LogV1]:
        """One window of logs, as Baseten's ``GET .../logs`` returns it."""
        query = api.GetTrainingJobLogsRequestV1(
            start_epoch_millis=start_epoch_millis,
            end_epoch_millis=end_epoch_millis,
            direction=direction,
            limit=limit,
            min_level=min_level,
        )
        path = f"{self._job_path(project_id, job_id)}/logs"
        return self._get(path, api.GetLogsResponseV1, **query.model_dump(mode="json")).logs

    def all_logs(
        self,
        project_id: str,
        job_id: str,
        *,
        start_epoch_millis: int | None = None,
        end_epoch_millis: int | None = None,
        concurrency: int = log_windows.CONCURRENCY,
    ) -> Iterator[api.LogV1]:
        """The whole log so far (from the job's creation), ascending, each line once.

        Baseten answers at most 1000 lines and 7 days per request, and only the last 30
        minutes when no start is given; so this always sends a start and an end, and
        reads disjoint windows, ``concurrency`` at a time (1: one page after another),
        merged in order (see :mod:`bt_jupyter.log_windows`): a long log downloads in a
        fraction of the round trips' time.
        """
        start, end = start_epoch_millis, end_epoch_millis
        if start is None or end is None:
            job = self.job(project_id, job_id).training_job
            start = job.log_since_ms if start is None else start
            end = job.log_until_ms(LOG_LOOK_BACK_MS) if end is None else end
        fetch = self._log_fetch(project_id, job_id)
        yield from log_windows.download(fetch, start, end, concurrency=concurrency)

    def _log_windows(
        self, project_id: str, job_id: str, start: int, end: int
    ) -> Iterator[api.LogV1]:
        """``[start, end]`` one page after another on this thread: a poll's short
        look-back window is a page or two, not worth threads."""
        fetch = self._log_fetch(project_id, job_id)
        return log_windows.download(fetch, start, end, concurrency=1)

    def _log_fetch(self, project_id: str, job_id: str) -> log_windows.Fetch:
        """One window request as :func:`log_windows.download` asks it (ascending)."""

        def fetch(
            start_ms: int, end_ms: int, limit: int, *, newest: bool = False
        ) -> list[api.LogV1]:
            page = self.logs(
                project_id,
                job_id,
                start_epoch_millis=start_ms,
                end_epoch_millis=end_ms,
                direction=api.SortOrderV1.DESC if newest else api.SortOrderV1.ASC,
                limit=limit,
            )
            return page[::-1] if newest else page

        return fetch

    def follow_logs(
        self,
        project_id: str,
        job_id: str,
        *,
        cursor: int = 0,
        poll_timeout: int = 20,
    ) -> Iterator[FollowedLog]:
        """Every line of the job, live, until it ends; no duplicates, no gaps.

        Uses the local service's long-poll (a line reaches the caller within ~50 ms);
        a dropped connection resumes from the last cursor. Against Baseten's cloud it
        polls windows instead (see :meth:`poll_logs`).
        """
        for batch in self.follow_batches(
            project_id, job_id, cursor=cursor, poll_timeout=poll_timeout
        ):
            for line in batch.logs:
                yield FollowedLog(line, batch.status)

    def follow_batches(
        self,
        project_id: str,
        job_id: str,
        *,
        cursor: int = 0,
        poll_timeout: int = 20,
        tail: int | None = None,
        keep_containing: str | None = None,
    ) -> Iterator[LogBatch]:
        """Like :meth:`follow_logs`, a response at a time. With ``tail``, each batch
        holds only the newest ``tail`` lines (and older ones holding
        ``keep_containing``); ``skipped`` counts the others. A view that shows recent lines
        then keeps up with any flood of output.

        A service that goes away (a restart, on another port perhaps) is waited for up to
        ``FOLLOW_RECONNECT_S``; the follow then resumes from its cursor: no gap, no
        duplicate."""
        path = f"/v1/local/training_projects/{project_id}/jobs/{job_id}/logs/follow"
        while True:
            params = {
                "cursor": cursor,
                "timeout": poll_timeout,
                "limit": 5000,
                "tail": tail,
                "keep_containing": keep_containing,
            }
            response = self._long_poll(path, params, poll_timeout)
            # validated in one pass by pydantic-core: this is the hot path of live logs
            body = api.LocalFollowLogsResponseV1.model_validate_json(response.content)
            yield LogBatch(body.logs, body.skipped, spec.TrainingJobStatus.from_wire(body.status))
            cursor = body.cursor
            if body.done:
                return

    def _long_poll(self, path: str, params: dict[str, Any], wait: float) -> httpx.Response:
        """One long-poll; a service that went away is waited for (``FOLLOW_RECONNECT_S``):
        the caller's cursor is kept, so a restart costs no line."""
        gone_since: float | None = None
        while True:
            try:
                return self.request("GET", path, params=params, timeout=wait + 30)
            except ConnectionFailed:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > FOLLOW_RECONNECT_S:
                    raise
                time.sleep(FOLLOW_RETRY_S)

    def log_page(
        self,
        project_id: str,
        job_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int = LOG_PAGE_LINES,
        node: int | None = None,
        wait: int = 0,
        ahead: bool = False,
    ) -> LogPage:
        """One page of the local service's bulk read (``/v1/local/.../logs/lines``):
        lines after the cursor ``after``, or the newest before ``before`` (0: the end);
        ``ahead``: with where the page after it ends."""
        path = f"/v1/local/training_projects/{project_id}/jobs/{job_id}/logs/lines"
        params: dict[str, Any] = {"limit": limit, "wait": wait, "ahead": int(ahead)}
        if before is None:
            params["after"] = after
        else:
            params["before"] = before or "end"
        if node is not None:
            params["node"] = node
        return LogPage.parse(self._long_poll(path, params, wait).content)

    def read_log(
        self,
        project_id: str,
        job_id: str,
        *,
        after: int = 0,
        node: int | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """Every line after the cursor: what was written so far, or (``follow``) live to
        the job's end, in pages of up to ``LOG_PAGE_LINES``.

        While a page is read here the next two are being read by the service (each page
        says where the one after it ends), so the service uses both of a machine's cores
        and the reader a third; at most three pages are held.
        """
        wait = 20 if follow else 0

        def fetch(cursor: int) -> LogPage:
            return self.log_page(project_id, job_id, after=cursor, node=node, wait=wait, ahead=True)

        pool = ThreadPoolExecutor(2, thread_name_prefix="bt-log-read")
        # (the cursor a page starts after, the page), in log order
        pending: collections.deque[tuple[int, Future[LogPage]]] = collections.deque()
        try:
            pending.append((after, pool.submit(fetch, after)))
            while pending:
                page = pending.popleft()[1].result()
                if pending and pending[0][0] != page.last:  # a guess that did not hold
                    pending.clear()
                if page.done or not (follow or page.count == LOG_PAGE_LINES):
                    yield from page.lines()
                    return
                if not pending:
                    pending.append((page.last, pool.submit(fetch, page.last)))
                if len(pending) == 1 and page.next_end:  # the page after the next one
                    pending.append((page.next_end, pool.submit(fetch, page.next_end)))
                yield from page.lines()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def poll_logs(
        self,
        project_id: str,
        job_id: str,
        *,
        interval: float = 1.0,
        fastest: float = 0.25,
        slowest: float = 4.0,
        linger: float = LOG_GRACE_S,
    ) -> Iterator[FollowedLog]:
        """Follow by polling windows (for services without the follow extension).

        Like truss: each poll reads from ``LOG_LOOK_BACK_MS`` before the previous poll, so
        lines that reach the log store late (behind newer ones) are still caught, and
        lines already yielded are skipped; after the job ends it keeps polling for
        ``linger`` seconds, so a final traceback or metric is not lost. Polls about every
        ``interval`` seconds: faster (down to ``fastest``) while lines arrive, slower (up
        to ``slowest``) while none do. Late lines come after newer ones, as they arrive.
        """
        poller = LogPoller(self, project_id, job_id)
        ended_at: float | None = None
        while True:
            status = self.job(project_id, job_id).training_job.status
            fresh = poller.poll()
            for line in fresh:
                yield FollowedLog(line, status)
            if status.is_terminal:
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at >= linger:
                    return
            interval = max(fastest, interval / 2) if fresh else min(slowest, interval * 1.5)
            time.sleep(min(interval, linger) if status.is_terminal else interval)

    # ------------------------------------------------------------------ metrics, checkpoints

    def metrics(self, project_id: str, job_id: str) -> api.GetTrainingJobMetricsResponseV1:
        path = f"{self._job_path(project_id, job_id)}/metrics"
        return self._get(path, api.GetTrainingJobMetricsResponseV1)

    def checkpoints(
        self, project_id: str, job_id: str, *, include_outputs: bool = False
    ) -> list[api.TrainingJobCheckpointV1]:
        """The job's checkpoints, oldest first. Baseten lists every top-level folder of the
        checkpoint directory, so the ``--out`` folder is left out unless asked for."""
        path = f"{self._job_path(project_id, job_id)}/checkpoints"
        found = self._get(path, api.GetTrainingJobCheckpointsResponseV1).checkpoints
        return [c for c in found if include_outputs or is_model_checkpoint(c.checkpoint_id)]

    def wait_checkpoints_synced(
        self, project_id: str, job_id: str, timeout: float = SYNC_TIMEOUT_S, poll: float = 0.5
    ) -> api.TrainingJobV1:
        """Wait until Baseten has copied the ended job's checkpoints to storage
        (``checkpoint_sync_status`` no longer SYNCING): only then are its files all listed.
        A job still running is returned at once (its checkpoints sync as they come)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(project_id, job_id).training_job
            if job.checkpoints_synced or not job.status.is_terminal:
                return job
            if time.monotonic() >= deadline:
                raise CheckpointsSyncing(
                    f"the checkpoints of job {job_id} are still syncing to storage after "
                    f"{timeout:.0f}s; try again in a while"
                )
            time.sleep(poll)

    def checkpoint_files(self, project_id: str, job_id: str) -> list[api.CheckpointFile]:
        """Every checkpoint file with its download URL (all pages)."""
        path = f"{self._job_path(project_id, job_id)}/checkpoint_files"
        files: list[api.CheckpointFile] = []
        token: int | None = 0
        while token is not None:
            page = self._get(
                path, api.GetTrainingJobCheckpointFilesResponseV1, page_size=500, page_token=token
            )
            files.extend(page.presigned_urls)
            token = page.next_page_token
        return files

    def download(self, url: str, target: Path) -> Path:
        """Fetch a presigned URL (checkpoint file or artifact) into ``target``.

        Without any Authorization header: the signature is in the URL, and S3 refuses a
        request that carries a second one (even an empty header)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._plain.stream("GET", url, timeout=60) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target

    def fetch_presigned(self, url: str) -> bytes:
        """The body of a presigned URL, sent with no Authorization header (see download)."""
        response = self._plain.get(url, timeout=60)
        return self._check(response).content

    def post_unsigned(self, url: str, body: Any, timeout: float = 300) -> httpx.Response:
        """POST JSON to a URL that takes no API key (a local serving process)."""
        return self._plain.post(url, json=body, timeout=timeout)

    def outputs(
        self,
        project_id: str,
        job_id: str,
        expected: list[str] | None = None,
        sync_timeout: float = SYNC_TIMEOUT_S,
    ) -> dict[str, Any]:
        """The variables the job saved with ``--out``.

        Waits for the job's checkpoint sync first. ``expected``: the ``--out`` names the
        job was submitted with; None looks them up in the job's bundle. When some were
        expected and none are there, :class:`OutputsMissing` says why; ``{}`` only for a
        job submitted without ``--out``.
        """
        job = self.wait_checkpoints_synced(project_id, job_id, sync_timeout)
        names = {f"rank-0/{folder}/{runtime.OUTPUTS_FILE}" for folder in OUTPUTS_DIRS}
        found = [
            f for f in self.checkpoint_files(project_id, job_id) if f.relative_file_name in names
        ]
        if found:
            values: dict[str, Any] = pickle.loads(self.fetch_presigned(found[0].url))
            return values
        if expected is None:
            expected = self._bundle_outputs(project_id, job_id)
        if not expected:
            return {}
        listed = ", ".join(expected)
        if not job.status.is_terminal:
            why = f"it is still {job.status.short}; they are saved when the cell finishes"
        elif job.status != spec.TrainingJobStatus.COMPLETED:
            why = f"it ended {job.status.short}" + (
                f": {job.error_message}" if job.error_message else ""
            )
        else:
            why = (
                "it completed without saving them (was checkpointing on? --out values are "
                f"kept under $BT_CHECKPOINT_DIR/{runtime.OUTPUTS_DIR})"
            )
        raise OutputsMissing(f"job {job_id} has no outputs ({listed}): {why}")

    def _bundle_outputs(self, project_id: str, job_id: str) -> list[str]:
        """The ``--out`` names in the manifest of the job's bundle ([] for jobs that are
        not bt_jupyter cells); read only when a job's outputs are not found."""
        manifest = self.bundle_manifest(project_id, job_id) or {}
        return [str(n) for n in manifest.get("outputs") or []]

    def bundle_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        """The manifest of a packaged cell's bundle (None for a job that is not one).

        The archive is streamed and left as soon as the manifest is read (bt_jupyter puts
        it first), so a bundle of gigabytes costs a few kilobytes; a job's files never
        change, so each job's manifest is fetched once."""
        if job_id in self._manifests:
            return self._manifests[job_id]
        found: dict[str, Any] | None = None
        for url in self.job_artifact_urls(project_id, job_id):
            try:
                with self._plain.stream("GET", url, timeout=60) as response:
                    if response.status_code >= 400:
                        continue
                    stream = _Readable(response.iter_bytes())
                    with tarfile.open(fileobj=stream, mode="r|*") as tar:
                        for member in tar:
                            if member.name == MANIFEST_PATH and member.isfile():
                                data = tar.extractfile(member)
                                loaded = json.loads(data.read()) if data else None
                                found = loaded if isinstance(loaded, dict) else None
                                break
            except (tarfile.TarError, ValueError, httpx.HTTPError):
                continue
            if found is not None:
                break
        if found is not None:
            self._manifests[job_id] = found
        return found

    def user_metrics(
        self, project_id: str, job_id: str, node: int | None = 0
    ) -> list[dict[str, Any]]:
        """What the job recorded (``log_metrics``, a Trainer), in order, each with the
        ``node`` that printed it; only that node's (and untagged) records unless ``node``
        is None. Every node of a multi-node Trainer job reports: the leader by default."""
        found: list[dict[str, Any]] = []
        for line in self.all_logs(project_id, job_id):
            record = runtime.parse_metric(line.message)
            if record is None:
                continue
            rank = node_of(line.replica)
            if node is None or rank is None or rank == node:
                found.append(record if rank is None else {**record, "node": rank})
        return found

    def job_artifact_urls(self, project_id: str, job_id: str) -> list[str]:
        path = f"{self._job_path(project_id, job_id)}/download"
        return self._get(path, api.DownloadTrainingJobResponseV1).artifact_presigned_urls

    def cache_summary(self, project_id: str) -> api.GetCacheSummaryResponseV1:
        path = f"/v1/training_projects/{project_id}/cache/summary"
        return self._get(path, api.GetCacheSummaryResponseV1)

    def blob_credentials(self) -> api.GetBlobCredentialsResponseV1:
        return self._get("/v1/blobs/credentials/train", api.GetBlobCredentialsResponseV1)

    # ------------------------------------------------------------------ deployments (local)

    def create_deployment(
        self,
        job_id: str,
        checkpoint: str = "latest",
        name: str | None = None,
        model_artifact: api.CreateTrainingJobS3Artifact | None = None,
        port: int | None = None,
    ) -> api.LocalDeploymentV1:
        body = api.LocalCreateDeploymentRequestV1(
            job_id=job_id,
            checkpoint=checkpoint,
            name=name,
            model_artifact=model_artifact,
            port=port,
        )
        return self._post("/v1/local/deployments", body, api.LocalDeploymentV1)

    def deployments(self) -> list[api.LocalDeploymentV1]:
        return self._get("/v1/local/deployments", api.LocalListDeploymentsResponseV1).deployments

    def deployment(self, deployment_id: str) -> api.LocalDeploymentV1:
        return self._get(f"/v1/local/deployments/{deployment_id}", api.LocalDeploymentV1)

    def stop_deployment(self, deployment_id: str) -> api.LocalDeploymentV1:
        path = f"/v1/local/deployments/{deployment_id}/stop"
        return self._post(path, None, api.LocalDeploymentV1, retry_ambiguous=True)

    def deployment_logs(self, deployment_id: str) -> list[api.LogV1]:
        path = f"/v1/local/deployments/{deployment_id}/logs"
        return self._get(path, api.GetLogsResponseV1).logs

    # ------------------------------------------------------------------ Baseten models

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, *, mutation: bool = False
    ) -> dict[str, Any]:
        """``data`` of a GraphQL operation; errors in the body raise :class:`GraphQLError`.
        A mutation that may have reached the server is not sent again."""
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        response = self.request(
            "POST",
            self.graphql_url,
            json=payload,
            headers=self._key_header,
            retry_ambiguous=not mutation,
        )
        body = response.json()
        if body.get("errors"):
            first = body["errors"][0]
            extensions = first.get("extensions") or {}
            message = extensions.get("description") or first.get("message") or str(first)
            raise GraphQLError(str(message), extensions.get("code"))
        return dict(body["data"])

    def model_deployment(self, model_id: str, deployment_id: str) -> serving_api.ModelDeploymentV1:
        path = f"/v1/models/{model_id}/deployments/{deployment_id}"
        return self._get(path, serving_api.ModelDeploymentV1)

    def deactivate_model_deployment(self, model_id: str, deployment_id: str) -> None:
        path = f"/v1/models/{model_id}/deployments/{deployment_id}/deactivate"
        self.request("POST", path, json={}, retry_ambiguous=True)

    def model_deployment_logs(self, model_id: str, deployment_id: str) -> list[api.LogV1]:
        """Oldest first (the API answers newest first, as Baseten's CLI notes)."""
        path = f"/v1/models/{model_id}/deployments/{deployment_id}/logs"
        response = self.request("POST", path, json={}, retry_ambiguous=True)
        return api.GetLogsResponseV1.model_validate(response.json()).logs[::-1]

    def invoke_model(self, model_id: str, deployment_id: str, path: str, body: Any) -> Any:
        """``POST`` a model deployment's endpoint (``/predict``, ``/sync/v1/...``)."""
        url = f"{model_url(self.base_url, model_id)}/deployment/{deployment_id}{path}"
        return self.request("POST", url, json=body, headers=self._key_header, timeout=300).json()

    # ------------------------------------------------------------------ artifacts (local)

    def upload_artifact(self, data: bytes) -> tuple[api.CreateTrainingJobS3Artifact, int]:
        """Upload a bundle to the local service, keyed by content: returns (artifact,
        bytes sent). An artifact the service already has is not sent again (0 bytes)."""
        key = f"{hashlib.sha256(data).hexdigest()}.tar"
        artifact = api.CreateTrainingJobS3Artifact(s3_bucket=api.LOCAL_ARTIFACT_BUCKET, s3_key=key)
        path = f"/v1/local/artifacts/{key}"
        try:
            self.request("HEAD", path)
            return artifact, 0
        except NotFound:
            pass
        self.request("PUT", path, content=data, headers={"content-type": "application/x-tar"})
        return artifact, len(data)


class LogPoller:
    """One reader of a job's log by time windows, Baseten's only way, one poll at a time.

    Like truss, each poll re-reads from ``LOG_LOOK_BACK_MS`` before the previous one, so
    lines that reach the log store late (behind newer ones) are still caught; lines it
    returned before are skipped. Kept by ``ApiClient.poll_logs`` and, across requests,
    by the server extension's log handler.
    """

    def __init__(
        self, client: ApiClient, project_id: str, job_id: str, since_ms: int | None = None
    ) -> None:
        self.client, self.project_id, self.job_id = client, project_id, job_id
        if since_ms is None:
            since_ms = client.job(project_id, job_id).training_job.log_since_ms
        self.floor = since_ms
        self.last_poll: int | None = None
        self._seen: dict[LogKey, int] = {}  # key -> its millisecond, within the look-back

    def mark_seen(self, lines: list[api.LogV1], polled_at_ms: int) -> None:
        """Count ``lines`` as returned (read elsewhere, e.g. a tail) by a poll at that time."""
        for line in lines:
            self._seen[_key(line)] = int(line.timestamp) // 1_000_000
        self.last_poll = polled_at_ms

    def poll(self, limit: int | None = None) -> list[api.LogV1]:
        """The lines not returned before, ascending as read (late lines come after newer
        ones); at most ``limit``, the rest with the next poll."""
        now = int(time.time() * 1000)
        start = self.floor if self.last_poll is None else self.last_poll - LOG_LOOK_BACK_MS
        fresh: list[api.LogV1] = []
        windows = self.client._log_windows(
            self.project_id, self.job_id, max(self.floor, start), now + LOG_LOOK_BACK_MS
        )
        for line in windows:
            key = _key(line)
            if key in self._seen:
                continue
            self._seen[key] = int(line.timestamp) // 1_000_000
            fresh.append(line)
            if limit is not None and len(fresh) >= limit:
                # not all read: the next poll starts where this one did
                return fresh
        self.last_poll = now
        horizon = now - LOG_LOOK_BACK_MS  # the next poll starts here: older keys go
        self._seen = {k: ms for k, ms in self._seen.items() if ms >= horizon}
        return fresh


def _key(line: api.LogV1) -> LogKey:
    return (line.timestamp, line.message, line.replica)
