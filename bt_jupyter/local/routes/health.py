"""``GET /v1/local/health``: the one route that needs no API key, so the client can tell
that this service (and which version and process) answers on a port before it has a key."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from bt_jupyter._version import __version__

router = APIRouter(prefix="/v1/local")


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__, "pid": os.getpid()})
