"""User-facing errors: one line that names what was wrong and what is allowed.

IPython prints an exception through ``_render_traceback_`` when it has one, so a user
mistake shows as a single line in a notebook instead of a pydantic dump or a traceback.
"""

from __future__ import annotations


class BtJupyterError(Exception):
    """Base class of every error bt_jupyter raises on purpose."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class InvalidConfigError(BtJupyterError, ValueError):
    """A training configuration that Baseten would reject (or that cannot run)."""


# ------------------------------------------------------------- talking to a service


class ApiError(BtJupyterError):
    """The service answered with an error; ``message`` says what was wrong."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status, self.message, self.code = status, message, code


class AuthError(ApiError):
    """Wrong or missing API key: retrying cannot help."""


class NotFound(ApiError):
    """The service has no such project, job or deployment (HTTP 404)."""


class GraphQLError(ApiError):
    """Baseten's GraphQL endpoint answered 200 with ``errors``; the first one's text."""

    def __init__(self, message: str, code: str | None = None) -> None:
        BtJupyterError.__init__(self, message)
        self.status, self.message, self.code = 200, message, code


class ConnectionFailed(BtJupyterError):
    """The service could not be reached, even after retries."""


class MissingApiKey(BtJupyterError):
    """No Baseten API key where bt_jupyter looks for one."""


class UnknownTeam(BtJupyterError):
    """No team of that name or id in the Baseten workspace."""


# ------------------------------------------------------------- jobs and what they leave


class NoSuchProject(BtJupyterError):
    """No project of that name or id (or more than one, in different teams)."""


class NoMetrics(BtJupyterError):
    """The job's nodes never started: there are no system metrics to show."""


class NoSession(BtJupyterError):
    """The job has no open interactive session to show or change."""


class NoSuchCheckpoint(BtJupyterError):
    """A job has no checkpoint of that name."""


class NoSuchJob(BtJupyterError):
    """No job of that id on this backend."""


class JobFailed(BtJupyterError):
    """The job ended FAILED or DEPLOY_FAILED; the message is the job's error message."""


class OutputsMissing(BtJupyterError):
    """The job was submitted with ``--out`` but its outputs are not (yet) there."""


class CheckpointsSyncing(BtJupyterError):
    """Baseten is still copying the job's checkpoints to storage after the wait."""


class NoCheckpoint(BtJupyterError):
    """A checkpoint to load names nothing: no such job, or no such checkpoint of it."""


class DownloadError(BtJupyterError):
    """A job's files could not be written here (nothing to fetch, or a clash on disk)."""


class MissingSecret(BtJupyterError):
    """A SecretReference names a secret the service does not have; nothing was sent."""


# ------------------------------------------------------------- deploying checkpoints


class DeployError(BtJupyterError):
    """The checkpoint cannot be deployed as asked; nothing was sent."""


class DeploymentFailed(BtJupyterError):
    """A deployment ended FAILED (or did not become ACTIVE in time)."""


# ------------------------------------------------ packaging a cell (nothing is sent yet)


class CaptureError(BtJupyterError):
    """Notebook state the cell needs cannot be sent to the job."""


class DependencyError(BtJupyterError):
    """Requirements that conflict, cannot be read, or cannot be found."""


class IncludeError(BtJupyterError):
    """An ``--include`` path that does not exist or cannot be read."""


# ------------------------------------------------- the local home folder and its paths


class HomeError(BtJupyterError):
    """The local home folder cannot be used, or cannot be made private to this user."""


class UnsafePathError(BtJupyterError, ValueError):
    """A name (team, project, job, checkpoint, file) that would lead outside its folder."""


class SecretStoreError(BtJupyterError, ValueError):
    """The local secrets file cannot be read (corrupted); it names the file and the fix."""


class JobTraceback(JobFailed):
    """A job failed with a traceback: shown as the notebook shows a local one (the frames
    name the notebook's cells and lines), then the job's error as the last line."""

    def __init__(self, message: str, remote_traceback: list[str]) -> None:
        super().__init__(message)
        #: The traceback's lines as the job's node printed them.
        self.remote_traceback = remote_traceback

    def _render_traceback_(self) -> list[str]:
        return [*self.remote_traceback, "", f"\x1b[0;31mJobFailed\x1b[0m: {self}"]


# ------------------------------------------------------------- live sessions


class SessionError(BtJupyterError):
    """A live session (``%bt_session``, ``%%bt_remote``) cannot do what was asked."""


class NoLiveSession(SessionError):
    """A remote cell or transfer with no session started or attached."""


class SessionEnded(SessionError):
    """The session's job has ended: its kernels are gone."""


class SessionRefused(SessionError):
    """The SSH proxy or the node refused the connection; the message says why."""


class TransferError(SessionError):
    """A value could not be pushed to or pulled from a session."""


class RemoteCellError(SessionError):
    """A remote cell raised: shown as the remote kernel's traceback (its frames name the
    notebook cell's lines), as a local error would be."""

    def __init__(self, message: str, remote_traceback: list[str]) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback

    def _render_traceback_(self) -> list[str]:
        return list(self.remote_traceback) or [str(self)]
