"""What the routes of the local service share: errors, times, log lines, request bodies
and query parameters, and running blocking store calls off the event loop."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from bt_jupyter import limits, spec
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.local.store import LogPage, LogRow

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class HttpError(Exception):
    """Answered as ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str, ident: str) -> HttpError:
    return HttpError(404, "NOT_FOUND", f"no {what} with id {limits.shown(ident)}")


def utc(epoch: float) -> datetime:
    """A stored epoch time as a datetime; one out of a datetime's range (or NaN) is
    clamped, never an error (no stored value can make a response fail)."""
    if math.isnan(epoch):
        epoch = 0.0
    return datetime.fromtimestamp(min(max(epoch, 0.0), 253402300799.0), tz=timezone.utc)


class FastJSON(JSONResponse):
    """A JSON response encoded by orjson: a 1,000-job list spent half its time in the
    standard library's encoder, on the event loop."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(model: BaseModel) -> JSONResponse:
    return FastJSON(model.model_dump(mode="json"))


def log_page_json(page: LogPage, last: int | None, status: str, done: bool) -> str:
    """The bulk read's answer (``/v1/local/.../logs/lines``): the page's columns spliced
    in as the JSON texts SQLite wrote, with no object made per line."""
    return (
        f'{{"first":{page.first_id or 0},"last":{last or 0},"count":{page.count},'
        f'"next_end":{page.next_end or 0},'
        f'"status":"{status}","done":{"true" if done else "false"},'
        f'"ts":{page.ts_ns},"nodes":{page.nodes},"levels":{page.levels},'
        f'"messages":{page.messages}}}'
    )


def log_json(row: LogRow) -> dict[str, Any]:
    """A line as Baseten's ``LogV1`` JSON, without the model: a log page holds a thousand."""
    return {
        "timestamp": str(row.ts_ns),
        "message": row.message,
        "replica": str(row.node) if row.node is not None else None,
        "request_id": None,
        "level": row.level,
    }


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a store call (blocking SQLite) off the event loop."""
    return await asyncio.to_thread(fn, *args)


# ----------------------------------------------------------------------------- requests


async def parse_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model`` (an empty body is ``{}``); 400, 413 or 422 saying what is
    wrong. The body is text (UTF-8, no unpaired surrogate escapes) of a bounded size."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.MAX_REQUEST_BYTES:
        raise _too_large(int(declared))
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.MAX_REQUEST_BYTES:
            raise _too_large(len(raw))
    return validate(model, parse_json(bytes(raw)))


def parse_json(raw: bytes) -> Any:
    """A JSON document (empty is ``{}``), or a 400 that says why it is none."""
    try:
        data = json.loads(raw or b"{}")
        # a "\ud800" escape decodes to a str that cannot be stored or sent back
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeError:
        raise HttpError(
            400, "MALFORMED_JSON", "request body is not UTF-8 text (or has an unpaired surrogate)"
        ) from None
    except RecursionError:
        raise HttpError(400, "MALFORMED_JSON", "request body is nested too deeply") from None
    except ValueError as exc:
        raise HttpError(400, "MALFORMED_JSON", f"request body is not valid JSON: {exc}") from None
    return data


def _too_large(size: int) -> HttpError:
    return HttpError(
        413,
        "TOO_LARGE",
        f"request body is {size:,} bytes; at most {limits.MAX_REQUEST_BYTES:,} are accepted",
    )


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
        raise HttpError(
            422, "INVALID_REQUEST", f"{name} must be an integer, got {limits.shown(raw)}"
        ) from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise HttpError(
            422, "INVALID_REQUEST", f"{name} must be {bound}, got {limits.shown(value)}"
        )
    return value
