"""The local service's HTTP API: Baseten's training REST API, answered on this machine.

Paths and JSON follow ``baseten-training-openapi.json``; bodies are parsed with the models
of :mod:`bt_jupyter.api`. Errors are JSON ``{"code": ..., "message": ...}`` whose message
names what was wrong; nothing is created by a request that fails. Extensions that Baseten
has no equivalent for live under ``/v1/local/``.

This module only assembles: error handlers, the API-key check, and the routers of
:mod:`bt_jupyter.local.routes` in an order where specific paths come before catch-alls.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bt_jupyter._version import __version__
from bt_jupyter.local.routes import (
    artifacts,
    checkpoints,
    deployments,
    health,
    logs,
    models_api,
    projects,
    s3_api,
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


async def _api_error(_: Request, exc: HttpError) -> JSONResponse:
    return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = {404: "no such endpoint", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return JSONResponse({"code": "HTTP_ERROR", "message": message}, exc.status_code)


def build_app(state: ServiceState) -> FastAPI:
    app = FastAPI(title="bt_jupyter local training service", version=__version__)
    app.state.service = state  # what the routes' ``State`` dependency reads
    state.release_queued()
    app.exception_handler(HttpError)(_api_error)
    app.exception_handler(StarletteHTTPException)(_http_error)

    key = [Depends(authenticated)]
    # Baseten's API (and the /v1/local extensions that need the API key)
    for router in (projects.router, logs.router, checkpoints.router, artifacts.router):
        app.include_router(router, dependencies=key)
    # no API key: health, and downloads whose URL carries its signature
    app.include_router(health.router)
    app.include_router(artifacts.presigned)
    app.include_router(checkpoints.presigned)
    app.include_router(deployments.router, dependencies=key)
    app.include_router(models_api.router, dependencies=key)
    app.include_router(s3_api.router)  # last: its paths are catch-alls under /s3
    return app
