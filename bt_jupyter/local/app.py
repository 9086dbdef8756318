"""The local service's HTTP API: Baseten's training REST API, answered on this machine.

Paths and JSON follow ``baseten-training-openapi.json``; bodies are parsed with the models
of :mod:`bt_jupyter.api`. Errors are JSON ``{"code": ..., "message": ...}`` whose message
names what was wrong; nothing is created by a request that fails. Extensions that Baseten
has no equivalent for live under ``/v1/local/``.

This module only assembles: error handlers, the API-key check, and the routers of
:mod:`bt_jupyter.local.routes` in an order where specific paths come before catch-alls.

No input makes it answer a bare 500: an exception no route expected is answered as JSON
``{"code": "INTERNAL", "message", "request_id"}`` by :class:`CatchAll`, its traceback is
logged to the service log with the same request id, and the connection stays open for the
next request (Starlette's own handler re-raises, and uvicorn then drops the connection).
"""

from __future__ import annotations

import hmac
import logging
import uuid

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bt_jupyter import limits
from bt_jupyter._version import __version__
from bt_jupyter.errors import HomeError, SecretStoreError, UnsafePathError
from bt_jupyter.local.routes import (
    artifacts,
    capacity,
    checkpoints,
    deployments,
    health,
    logs,
    models_api,
    projects,
    s3_api,
    secrets,
    sessions,
    ssh,
)
from bt_jupyter.local.state import ServiceState, State
from bt_jupyter.local.wire import HttpError


async def authenticated(request: Request, state: State) -> None:
    """The service's API key, sent as ``Bearer`` (or ``Api-Key``, as Baseten accepts)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("bearer", "api-key") or not hmac.compare_digest(
        key.strip(), state.api_key
    ):
        raise HttpError(
            401,
            "UNAUTHENTICATED",
            "missing or wrong API key: send 'Authorization: Bearer <key>' "
            f"with the key in {state.home.api_key_file}",
        )


#: uvicorn's error logger writes to the service's stderr, which is the service log.
log = logging.getLogger("uvicorn.error")


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a JSON 500 with a request id (and a
    logged traceback) instead of a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            request_id = uuid.uuid4().hex[:12]
            log.error(
                "request %s %s failed (request id %s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
                exc_info=exc,
            )
            if started:  # half an answer was sent: only closing the connection can end it
                raise
            await _internal(request_id, type(exc).__name__)(scope, receive, send)


def _internal(request_id: str, kind: str) -> JSONResponse:
    """The answer to a request that failed in a way no route expected: short, no input
    echoed, the id to find its traceback in the service log with."""
    body = {
        "code": "INTERNAL",
        "message": f"internal error ({kind}); the service log has the details "
        f"(request id {request_id})",
        "request_id": request_id,
    }
    return JSONResponse(body, status_code=500, headers={"x-request-id": request_id})


async def _api_error(_: Request, exc: HttpError) -> JSONResponse:
    return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = {404: "no such endpoint", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return JSONResponse({"code": "HTTP_ERROR", "message": message}, exc.status_code)


async def _unsafe_path(_: Request, exc: UnsafePathError) -> JSONResponse:
    """A name that would lead outside its folder (``..``, ``/``): the request's mistake."""
    return JSONResponse({"code": "INVALID_NAME", "message": str(exc)}, status_code=400)


async def _unreadable_state(_: Request, exc: HomeError | SecretStoreError) -> JSONResponse:
    """The service's own files cannot be read: not the request's fault, but a clear line
    that says which file and what to do, instead of an anonymous internal error."""
    return JSONResponse({"code": "STATE_UNREADABLE", "message": str(exc)}, status_code=500)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 lists every error with its whole input: one short line instead."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}, got {limits.shown(first.get('input'))}"
    return JSONResponse({"code": "INVALID_REQUEST", "message": message}, status_code=422)


def build_app(state: ServiceState) -> FastAPI:
    app = FastAPI(title="bt_jupyter local training service", version=__version__)
    app.state.service = state  # what the routes' ``State`` dependency reads
    state.release_queued()
    app.exception_handler(HttpError)(_api_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(UnsafePathError)(_unsafe_path)
    app.exception_handler(HomeError)(_unreadable_state)
    app.exception_handler(SecretStoreError)(_unreadable_state)
    app.add_middleware(CatchAll)

    key = [Depends(authenticated)]
    # Baseten's API (and the /v1/local extensions that need the API key)
    for router in (
        projects.router,
        capacity.router,
        logs.router,
        checkpoints.router,
        artifacts.router,
        secrets.router,
        sessions.router,
        ssh.router,
    ):
        app.include_router(router, dependencies=key)
    # no API key: health, and downloads whose URL carries its signature
    app.include_router(health.router)
    app.include_router(artifacts.presigned)
    app.include_router(checkpoints.presigned)
    app.include_router(deployments.router, dependencies=key)
    app.include_router(models_api.router, dependencies=key)
    app.include_router(s3_api.router)  # last: its paths are catch-alls under /s3
    return app
