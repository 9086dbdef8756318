"""What the browser is told when a request fails: a status code, a reason and one line.

The mapping is pure (no tornado) so every error the client library raises on purpose has
one answer: bad input 400, no or wrong API key 401, unknown job 404, a conflict 409, the
service unreachable 503 (or failing, 502). Messages are the library's own one-liners; they
name what was wrong and how to fix it, never a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from bt_jupyter.errors import (
    ApiError,
    AuthError,
    BtJupyterError,
    ConnectionFailed,
    MissingApiKey,
    NoSuchJob,
    NotFound,
)


class BadRequest(BtJupyterError):
    """A query parameter or body the endpoint cannot use (HTTP 400)."""


class Conflict(BtJupyterError):
    """The request does not fit the job's state, e.g. stopping an ended job (HTTP 409)."""


class NoSuchDeployment(BtJupyterError):
    """The job has no deployment of that id (HTTP 404)."""


class BackendUnavailable(BtJupyterError):
    """The backend's service could not be started or reached (HTTP 503)."""


@dataclass(frozen=True)
class HttpFailure:
    status: int
    reason: str
    message: str

    def json(self) -> dict[str, str]:
        return {"message": self.message, "reason": self.reason}


def failure(exc: BaseException) -> HttpFailure | None:
    """The HTTP answer for an error raised on purpose; None for a bug (answered 500)."""
    if isinstance(exc, BadRequest):
        return HttpFailure(400, "bad_request", str(exc))
    if isinstance(exc, Conflict):
        return HttpFailure(409, "conflict", str(exc))
    if isinstance(exc, MissingApiKey):
        return HttpFailure(401, "missing_api_key", str(exc))
    if isinstance(exc, AuthError):
        return HttpFailure(
            401,
            "unauthorized",
            f"the service refused the API key: {exc.message}; set BASETEN_API_KEY to a valid "
            "key (or run `truss login`) and try again",
        )
    if isinstance(exc, (NoSuchJob, NoSuchDeployment)):
        return HttpFailure(404, "not_found", str(exc))
    if isinstance(exc, NotFound):
        return HttpFailure(404, "not_found", exc.message)
    if isinstance(exc, ApiError):
        if exc.status >= 500 or exc.status == 429:
            return HttpFailure(502, "service_error", f"the training service failed: {exc}")
        if exc.status == 409:
            return HttpFailure(409, "conflict", exc.message)
        return HttpFailure(400, "bad_request", exc.message)
    if isinstance(exc, (ConnectionFailed, BackendUnavailable)):
        return HttpFailure(503, "unreachable", str(exc))
    if isinstance(exc, BtJupyterError):  # e.g. deploying on the cloud, an invalid status
        return HttpFailure(400, "bad_request", str(exc))
    return None
