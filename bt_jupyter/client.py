"""The one HTTP client for Baseten's training API, for the local service and the cloud.

Built on httpx with a transport seam (``transport=``) for tests. Calls are typed by the
models of :mod:`bt_jupyter.api`. Failures that may be transient (connection errors,
429, 5xx) are retried with exponential backoff and full jitter, but a job is never
created twice because of a retry: creates carry an ``Idempotency-Key`` that the local
service honours, and against a service that does not, an ambiguous create is not retried.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from bt_jupyter import api, runtime, serving_api, spec
from bt_jupyter.errors import BtJupyterError

M = TypeVar("M", bound=BaseModel)
LogKey = tuple[str, str, str | None]
MODEL_URL_ENV = "BT_JUPYTER_BASETEN_MODEL_URL"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ApiError(BtJupyterError):
    """The service answered with an error; ``message`` says what was wrong."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status, self.message, self.code = status, message, code


class AuthError(ApiError):
    """Wrong or missing API key: retrying cannot help."""


class NotFound(ApiError):
    pass


class GraphQLError(ApiError):
    """Baseten's GraphQL endpoint answered 200 with ``errors``; the first one's text."""

    def __init__(self, message: str, code: str | None = None) -> None:
        BtJupyterError.__init__(self, message)
        self.status, self.message, self.code = 200, message, code


class ConnectionFailed(BtJupyterError):
    """The service could not be reached, even after retries."""


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


@dataclass(frozen=True)
class LogBatch:
    """One response of :meth:`ApiClient.follow_batches`."""

    logs: list[api.LocalFollowedLogV1]
    skipped: int
    status: spec.TrainingJobStatus


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
        local_extensions: bool = False,
        graphql_url: str | None = None,
    ) -> None:
        """``local_extensions``: the service is bt_jupyter's local one, which honours
        Idempotency-Key on creates and serves ``/v1/local/`` (log follow, history, uploads).
        ``graphql_url``: Baseten's GraphQL endpoint, by default the app host's ``/graphql/``
        (``api.baseten.co`` -> ``app.baseten.co``)."""
        self.base_url = base_url.rstrip("/")
        self.graphql_url = graphql_url or _graphql_url(self.base_url)
        # GraphQL and model endpoints take the key the way Baseten's CLI sends it
        self._key_header = {"Authorization": f"Api-Key {api_key}"}
        self.retry = retry or RetryPolicy()
        self.local_extensions = local_extensions
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "bt_jupyter"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def local(cls, home: Path | None = None, **kwargs: Any) -> ApiClient:
        from bt_jupyter.local.daemon import ensure_running
        from bt_jupyter.local.home import Home

        info = ensure_running(Home(home) if home else None)
        kwargs.setdefault("local_extensions", True)
        return cls(info.url, info.api_key, **kwargs)

    def close(self) -> None:
        self._http.close()

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
        for attempt in range(self.retry.attempts):
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
                continue
            if attempt < self.retry.attempts - 1:
                time.sleep(self.retry.delay(attempt))
        raise ConnectionFailed(
            f"could not reach {self.base_url} ({type(last).__name__}: {last}) after "
            f"{self.retry.attempts} attempts"
        )

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
            retry_ambiguous=self.local_extensions,
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
        self, project_id: str, job_id: str, *, start_epoch_millis: int | None = None
    ) -> Iterator[api.LogV1]:
        """The whole log so far, in ascending windows, each line once.

        Windows overlap by the last millisecond seen, so lines are deduplicated on
        (timestamp, message, node), as Baseten's own CLI does.
        """
        start = start_epoch_millis
        if start is None:
            created = self.job(project_id, job_id).training_job.created_at
            start = int(created.timestamp() * 1000) - 1000
        seen: set[LogKey] = set()
        while True:
            window = self.logs(
                project_id,
                job_id,
                start_epoch_millis=start,
                direction=api.SortOrderV1.ASC,
                limit=api.MAX_LOG_LIMIT,
            )
            fresh = [line for line in window if _key(line) not in seen]
            yield from fresh
            if len(window) < api.MAX_LOG_LIMIT:
                return
            last_ms = int(window[-1].timestamp) // 1_000_000
            # keep only the keys that can reappear (the overlapping millisecond)
            seen = {_key(line) for line in window if int(line.timestamp) // 1_000_000 == last_ms}
            start = last_ms if last_ms > start else start + 1

    def stream_logs(self, project_id: str, job_id: str) -> Iterator[FollowedLog]:
        """Every line of the job, live, until it ends: long-poll locally, else polling."""
        if self.local_extensions:
            return self.follow_logs(project_id, job_id)
        return self.poll_logs(project_id, job_id)

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
        keep_prefix: str | None = None,
    ) -> Iterator[LogBatch]:
        """Like :meth:`follow_logs`, a response at a time. With ``tail``, each batch
        holds only the newest ``tail`` lines (and older ones starting with
        ``keep_prefix``); ``skipped`` counts the others. A view that shows recent lines
        then keeps up with any flood of output."""
        path = f"/v1/local/training_projects/{project_id}/jobs/{job_id}/logs/follow"
        while True:
            response = self.request(
                "GET",
                path,
                params={
                    "cursor": cursor,
                    "timeout": poll_timeout,
                    "limit": 5000,
                    "tail": tail,
                    "keep_prefix": keep_prefix,
                },
                timeout=poll_timeout + 30,
            )
            # validated in one pass by pydantic-core: this is the hot path of live logs
            body = api.LocalFollowLogsResponseV1.model_validate_json(response.content)
            yield LogBatch(body.logs, body.skipped, spec.TrainingJobStatus(body.status))
            cursor = body.cursor
            if body.done:
                return

    def poll_logs(
        self,
        project_id: str,
        job_id: str,
        *,
        interval: float = 1.0,
        fastest: float = 0.25,
        slowest: float = 4.0,
        linger: float = 3.0,
    ) -> Iterator[FollowedLog]:
        """Follow by polling windows (for services without the follow extension).

        Polls about every ``interval`` seconds: faster (down to ``fastest``) while lines
        arrive, slower (up to ``slowest``) while none do, and for ``linger`` seconds after
        the job ends so trailing lines are not lost. Each line is yielded once.
        """
        start: int | None = None
        seen: set[LogKey] = set()
        ended_at: float | None = None
        while True:
            status = self.job(project_id, job_id).training_job.status
            fresh = 0
            for line in self.all_logs(project_id, job_id, start_epoch_millis=start):
                if _key(line) in seen:
                    continue
                seen.add(_key(line))
                fresh += 1
                start = int(line.timestamp) // 1_000_000
                yield FollowedLog(line, status)
            if status.is_terminal:
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at >= linger:
                    return
            if start is not None:
                seen = {k for k in seen if int(k[0]) // 1_000_000 >= start}
            interval = max(fastest, interval / 2) if fresh else min(slowest, interval * 1.5)
            time.sleep(min(interval, linger) if status.is_terminal else interval)

    # ------------------------------------------------------------------ metrics, checkpoints

    def metrics(self, project_id: str, job_id: str) -> api.GetTrainingJobMetricsResponseV1:
        path = f"{self._job_path(project_id, job_id)}/metrics"
        return self._get(path, api.GetTrainingJobMetricsResponseV1)

    def checkpoints(self, project_id: str, job_id: str) -> list[api.TrainingJobCheckpointV1]:
        path = f"{self._job_path(project_id, job_id)}/checkpoints"
        return self._get(path, api.GetTrainingJobCheckpointsResponseV1).checkpoints

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
        """Fetch a presigned URL (checkpoint file or artifact) into ``target``."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with httpx.stream("GET", url, timeout=60) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target

    def outputs(self, project_id: str, job_id: str) -> dict[str, Any]:
        """The variables the job saved with ``--out`` (``{}`` when it saved none)."""
        wanted = f"rank-0/{runtime.OUTPUTS_DIR}/{runtime.OUTPUTS_FILE}"
        found = [
            f for f in self.checkpoint_files(project_id, job_id) if f.relative_file_name == wanted
        ]
        if not found:
            return {}
        response = self._http.get(found[0].url, headers={"Authorization": ""})
        self._check(response)
        values: dict[str, Any] = pickle.loads(response.content)
        return values

    def user_metrics(self, project_id: str, job_id: str) -> list[dict[str, Any]]:
        """What the job recorded with ``log_metrics``, in order."""
        records = (runtime.parse_metric(line.message) for line in self.all_logs(project_id, job_id))
        return [r for r in records if r is not None]

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


def _key(line: api.LogV1) -> LogKey:
    return (line.timestamp, line.message, line.replica)
