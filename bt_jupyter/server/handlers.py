"""Tornado handlers of ``{base_url}bt-jupyter/``: thin, authenticated, JSON in and out.

Each handler parses its request, runs one function of :mod:`.operations` (or
:mod:`.logs`) on the extension's threads and writes the answer. Errors the library raises
on purpose become ``{"message", "reason"}`` with their status (:mod:`.errors`); anything
else is jupyter_server's JSON 500, without a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from bt_jupyter import spec
from bt_jupyter.jobs import Client
from bt_jupyter.server import logs, operations
from bt_jupyter.server.backends import BtJupyterServer
from bt_jupyter.server.errors import BadRequest, failure
from bt_jupyter.server.wire import JSON

#: Where the extension's state lives in the tornado application's settings.
SETTINGS_KEY = "bt_jupyter"
#: The resource jupyter_server's Authorizer is asked about (read: GET, write: POST).
AUTH_RESOURCE = "bt_jupyter"

H = TypeVar("H", bound="BaseHandler")
P = ParamSpec("P")


def json_errors(
    method: Callable[Concatenate[H, P], Awaitable[None]],
) -> Callable[Concatenate[H, P], Awaitable[None]]:
    """Answer the errors raised on purpose as JSON with their status code."""

    async def answer(self: H, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await method(self, *args, **kwargs)
        except Exception as exc:
            failed = failure(exc)
            if failed is None:
                raise
            request = self.request
            self.log.info(
                "%s %s: %s %s", request.method, request.path, failed.status, failed.message
            )
            self.set_status(failed.status)
            self.finish(failed.json())

    return functools.wraps(method)(answer)


class BaseHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def bt(self) -> BtJupyterServer:
        return cast(BtJupyterServer, self.settings[SETTINGS_KEY])

    def arg(self, name: str) -> str:
        return self.get_query_argument(name, "") or ""

    async def run(self, work: Callable[[Client], JSON]) -> JSON:
        """``work`` with the client of the backend the request names (400 if unknown)."""
        return await self.bt.run(self.bt.backend(self.arg("backend")), work)


class ConfigHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.bt.backend(self.arg("backend"))  # an unknown one is 400 here too
        default = str(self.bt.default_backend)
        self.finish(await self.bt.run_plain(lambda: operations.config(default)))


class ProjectsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        self.finish(await self.run(operations.projects))


class JobsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        project = self.arg("project") or None
        status = spec.TrainingJobStatus.parse(self.arg("status")) if self.arg("status") else None
        page = operations.page_of(self.arg("limit"), self.arg("cursor"))
        self.finish(await self.run(lambda client: operations.jobs(client, project, status, page)))


class JobHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        self.finish(await self.run(lambda client: operations.job(client, job_id)))


class LogsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        names = self.request.query_arguments
        query = logs.parse_query({name: self.arg(name) for name in names})
        self.finish(await self.run(lambda client: logs.read(client, job_id, query)))


class CheckpointsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        self.finish(await self.run(lambda client: operations.checkpoints(client, job_id)))


class StopHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def post(self, job_id: str) -> None:
        self.finish(await self.run(lambda client: operations.stop(client, job_id)))


class DeployHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def post(self, job_id: str) -> None:
        body: Any = self.get_json_body() or {}
        checkpoint = body.get("checkpoint", "latest") if isinstance(body, dict) else None
        if not isinstance(checkpoint, str):
            raise BadRequest('the body must be {"checkpoint": "latest" | "<checkpoint name>"}')
        answer = await self.run(lambda client: operations.deploy(client, job_id, checkpoint))
        self.set_status(202)
        self.finish(answer)


class MetricsHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self, job_id: str) -> None:
        self.finish(await self.run(lambda client: operations.metrics(client, job_id)))


class CompareHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def get(self) -> None:
        ids, metric = self.arg("jobs").split(","), self.arg("metric")
        self.finish(await self.run(lambda client: operations.compare_jobs(client, ids, metric)))


class DeploymentCallHandler(BaseHandler):
    """The try-it box: the browser sends text, the key stays on the server."""

    @web.authenticated
    @authorized
    @json_errors
    async def post(self, job_id: str, deployment_id: str) -> None:
        body: Any = self.get_json_body() or {}
        text = body.get("input", "") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise BadRequest('the body must be {"input": "<prompt or JSON text>"}')
        self.finish(
            await self.run(
                lambda client: operations.call_deployment(client, job_id, deployment_id, text)
            )
        )


class DeploymentStopHandler(BaseHandler):
    @web.authenticated
    @authorized
    @json_errors
    async def post(self, job_id: str, deployment_id: str) -> None:
        self.finish(
            await self.run(lambda client: operations.stop_deployment(client, job_id, deployment_id))
        )


def routes(base_url: str) -> list[tuple[str, type[BaseHandler]]]:
    def at(path: str) -> str:
        return url_path_join(base_url, "bt-jupyter", path)

    job = "jobs/([^/]+)"
    return [
        (at("config"), ConfigHandler),
        (at("projects"), ProjectsHandler),
        (at("jobs"), JobsHandler),
        (at("compare"), CompareHandler),
        (at(job), JobHandler),
        (at(f"{job}/logs"), LogsHandler),
        (at(f"{job}/checkpoints"), CheckpointsHandler),
        (at(f"{job}/stop"), StopHandler),
        (at(f"{job}/deploy"), DeployHandler),
        (at(f"{job}/metrics"), MetricsHandler),
        (at(f"{job}/deployments/([^/]+)/call"), DeploymentCallHandler),
        (at(f"{job}/deployments/([^/]+)/stop"), DeploymentStopHandler),
    ]
