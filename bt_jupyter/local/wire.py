"""What the routes of the local service share: errors, times, log lines, request bodies
and query parameters, presigned-URL signatures, and running blocking store calls off the
event loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from bt_jupyter import api, spec
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.local.store import LogRow

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class HttpError(Exception):
    """Answered as ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str, ident: str) -> HttpError:
    return HttpError(404, "NOT_FOUND", f"no {what} with id {ident!r}")


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def ok(model: BaseModel) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"))


def log_wire(row: LogRow) -> api.LogV1:
    return api.LogV1(
        timestamp=str(row.ts_ns),
        message=row.message,
        replica=str(row.node) if row.node is not None else None,
        level=api.LogLevelV1(row.level),
    )


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a store call (blocking SQLite) off the event loop."""
    return await asyncio.to_thread(fn, *args)


# ----------------------------------------------------------------------------- requests


async def parse_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model`` (an empty body is ``{}``); 400 or 422 saying what is wrong."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HttpError(400, "MALFORMED_JSON", f"request body is not valid JSON: {exc}") from None
    return validate(model, data)


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except InvalidConfigError as exc:
        raise HttpError(422, "INVALID_REQUEST", str(exc)) from None
    except ValidationError as exc:
        raise HttpError(422, "INVALID_REQUEST", str(spec.invalid_config(model, exc))) from None


def parse_query(request: Request, model: type[M]) -> M:
    """The query parameters ``model`` defines, validated (others are ignored, as HTTP APIs do)."""
    known = {k: v for k, v in request.query_params.items() if k in model.model_fields}
    return validate(model, known)


def int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(422, "INVALID_REQUEST", f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise HttpError(422, "INVALID_REQUEST", f"{name} must be {bound}, got {value}")
    return value


# ----------------------------------------------------------------------------- signatures


def sign(key: str, path: str) -> str:
    """The signature a presigned URL of ``path`` carries (``?sig=``), keyed by the API key."""
    return hmac.new(key.encode(), path.encode(), hashlib.sha256).hexdigest()


def check_signature(request: Request, key: str, refuse_authorization: bool) -> None:
    """A presigned URL carries its own signature. Like S3, the baseten-mode stand-in
    (``refuse_authorization``) refuses a request that also sends an Authorization header
    (even an empty one)."""
    if refuse_authorization and "authorization" in request.headers:
        raise HttpError(
            403,
            "FORBIDDEN",
            "a presigned URL takes no Authorization header: its signature is in the URL",
        )
    expected = sign(key, request.url.path)
    if not hmac.compare_digest(request.query_params.get("sig", ""), expected):
        raise HttpError(403, "FORBIDDEN", "missing or invalid signature on this download URL")
