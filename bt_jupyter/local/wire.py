"""What the routes of the local service share: errors, times, log lines, and running
blocking store calls off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bt_jupyter import api
from bt_jupyter.local.store import LogRow

T = TypeVar("T")


class ApiError(Exception):
    """Answered as ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"no {what} with id {ident!r}")


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
