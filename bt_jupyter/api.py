"""Request and response models of Baseten's training REST API (the subset we speak).

Shared by the client and the local service, so both sides of every exchange are typed by
the same classes. Each class is named after the schema it mirrors in Baseten's OpenAPI
spec (``../shared/reference/baseten-training-openapi.json``); tests/test_api_schema.py
validates an example of every class against that schema. Requests refuse unknown fields
(the local service answers 422 with the field's name); responses ignore them, so the
client keeps working when Baseten adds fields.
"""

from __future__ import annotations

import enum
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import Self

from bt_jupyter import limits, spec
from bt_jupyter.errors import InvalidConfigError

__all__ = [
    "AWSCredentialsV1",
    "CheckpointFile",
    "CreateTrainingJobRequestV1",
    "CreateTrainingJobResponseV1",
    "CreateTrainingJobRuntimeV1",
    "CreateTrainingJobS3Artifact",
    "CreateTrainingJobV1",
    "DownloadTrainingJobResponseV1",
    "FileSummary",
    "GetAuthCodesResponseV1",
    "GetBlobCredentialsResponseV1",
    "GetCacheSummaryResponseV1",
    "GetLogsResponseV1",
    "GetTrainingJobCheckpointFilesResponseV1",
    "GetTrainingJobCheckpointsResponseV1",
    "GetTrainingJobLogsRequestV1",
    "GetTrainingJobMetricsRequestV1",
    "GetTrainingJobMetricsResponseV1",
    "GetTrainingJobResponseV1",
    "GetTrainingProjectResponseV1",
    "GitInfo",
    "InstanceTypeV1",
    "ListTrainingJobsResponseV1",
    "ListTrainingProjectsResponseV1",
    "LogLevelV1",
    "LogV1",
    "OrderByV1",
    "RecreateTrainingJobResponseV1",
    "SearchTrainingJobsRequestV1",
    "SearchTrainingJobsResponseV1",
    "SortOrderV1",
    "StopTrainingJobRequestV1",
    "StopTrainingJobResponseV1",
    "StorageMetricsV1",
    "TrainingJobCheckpointV1",
    "TrainingJobMetricV1",
    "TrainingJobMetricsV1",
    "TrainingJobNodeMetricsV1",
    "TrainingJobTombstoneV1",
    "TrainingJobV1",
    "TrainingProjectSummaryV1",
    "TrainingProjectTombstoneV1",
    "TrainingProjectV1",
    "TrussUserEnv",
    "UpdateTrainingJobRequestV1",
    "UpdateTrainingJobResponseV1",
    "UpsertTrainingProjectRequestV1",
    "UpsertTrainingProjectResponseV1",
    "UpsertTrainingProjectV1",
    "UserV1",
]

MAX_LOG_LIMIT = 1000
#: Log levels, least severe first (the local service stores a level as its index).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Baseten refuses a log window longer than this (start to end).
MAX_LOG_WINDOW_MS = 7 * 24 * 3600 * 1000
#: Without ``start_epoch_millis`` Baseten returns only this much before the end.
DEFAULT_LOG_WINDOW_MS = 30 * 60 * 1000
#: ``checkpoint_sync_status`` values (``CheckpointSyncStatus`` in the spec).
CHECKPOINT_SYNCING = "SYNCING"
CHECKPOINT_SYNCED = "COMPLETED"
#: The checkpoint id Baseten gives the files written at the checkpoint root.
ROOT_CHECKPOINT = "."
#: The "S3 bucket" of artifacts uploaded to the local service (its own artifact store).
LOCAL_ARTIFACT_BUCKET = "bt-jupyter-local"


class _Request(BaseModel):
    """Refuses unknown fields; every text field is bounded (see :mod:`bt_jupyter.limits`).
    A bad value is one :class:`~bt_jupyter.errors.InvalidConfigError` line, the same the
    service answers with (a client builds these models too: it refuses before sending)."""

    model_config = ConfigDict(extra="forbid", str_max_length=limits.MAX_COMMAND_CHARS)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise spec.invalid_config(type(self), exc) from None

    # Nested validation must not go through __init__ (errors are rendered once, at the top).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise spec.invalid_config(cls, exc) from None


def _epoch_millis(value: int | None) -> int | None:
    """A time in epoch ms that still fits a 64-bit count of nanoseconds (year 2262)."""
    return value if value is None else limits.check_int(value, 0, limits.MAX_EPOCH_MILLIS)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------- projects


class UpsertTrainingProjectV1(_Request):
    name: spec.ProjectName
    team_name: spec.TeamName | None = None


class UpsertTrainingProjectRequestV1(_Request):
    training_project: UpsertTrainingProjectV1

    @classmethod
    def of(cls, project: spec.TrainingProject) -> UpsertTrainingProjectRequestV1:
        return cls(training_project=UpsertTrainingProjectV1(**project.to_wire()))


class TrainingProjectSummaryV1(_Response):
    id: str
    name: str


class InstanceTypeV1(_Response):
    id: str
    name: str
    memory_limit_mib: int
    millicpu_limit: int
    gpu_count: int
    gpu_type: str | None
    gpu_memory_limit_mib: int | None


class UserV1(_Response):
    email: str | None = None


class TrainingJobV1(_Response):
    id: str
    created_at: datetime
    current_status: str
    error_message: str | None = None
    instance_type: InstanceTypeV1
    node_count: int = Field(default=1, ge=1)
    updated_at: datetime
    training_project_id: str
    training_project: TrainingProjectSummaryV1
    name: str | None = None
    checkpoint_sync_status: str | None = None
    priority: int = 0
    availability_model: spec.AvailabilityModel = spec.AvailabilityModel.DEDICATED
    user: UserV1 | None = None

    @property
    def status(self) -> spec.TrainingJobStatus:
        """Never raises: a status this version does not know is kept as is."""
        return spec.TrainingJobStatus.from_wire(self.current_status)

    @property
    def checkpoints_synced(self) -> bool:
        """Baseten has copied every checkpoint file to storage (``checkpoint_sync_status``
        is not ``SYNCING``): what checkpoint_files lists is then complete."""
        return self.checkpoint_sync_status != CHECKPOINT_SYNCING

    @property
    def log_since_ms(self) -> int:
        """Where its log starts (epoch ms): a second before its creation (clock skew)."""
        return int(self.created_at.timestamp() * 1000) - 1000

    def log_until_ms(self, late_ms: int) -> int:
        """Where its log ends (epoch ms): when it ended, or now while it runs, plus
        ``late_ms`` for lines that reach the log store late."""
        last = self.updated_at.timestamp() if self.status.is_terminal else time.time()
        return int(last * 1000) + late_ms


class TrainingProjectV1(_Response):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    team_name: str | None = None
    latest_job: TrainingJobV1 | None


class UpsertTrainingProjectResponseV1(_Response):
    training_project: TrainingProjectV1


class GetTrainingProjectResponseV1(_Response):
    training_project: TrainingProjectV1


class ListTrainingProjectsResponseV1(_Response):
    training_projects: list[TrainingProjectV1]


class TrainingProjectTombstoneV1(_Response):
    id: str
    deleted: bool


# --------------------------------------------------------------------------- jobs


class CreateTrainingJobS3Artifact(_Request):
    s3_bucket: str
    s3_key: str


class GitInfo(_Request):
    latest_commit_sha: str
    latest_tag: str | None
    commits_since_tag: int | None
    has_uncommitted_changes: bool


class TrussUserEnv(BaseModel):
    """Which client sent the job; the fields truss sends, and any others kept as given."""

    model_config = ConfigDict(extra="allow")

    truss_client_version: str | None = None
    python_version: str | None = None
    pydantic_version: str | None = None
    mypy_version: str | None = None
    git_info: GitInfo | None = None


class CreateTrainingJobRuntimeV1(spec.Runtime):
    """The runtime as sent: the concept plus the uploaded bundle(s)."""

    artifacts: list[CreateTrainingJobS3Artifact] = Field(
        default_factory=list, max_length=limits.MAX_LIST_ITEMS
    )


class CreateTrainingJobV1(spec.TrainingJob):
    """The job as sent: the concept plus what the push adds (artifacts, client env)."""

    runtime: CreateTrainingJobRuntimeV1 = Field(default_factory=CreateTrainingJobRuntimeV1)
    truss_user_env: TrussUserEnv | None = None

    @classmethod
    def of(
        cls,
        job: spec.TrainingJob,
        artifacts: list[CreateTrainingJobS3Artifact] | None = None,
        truss_user_env: TrussUserEnv | None = None,
    ) -> CreateTrainingJobV1:
        data = job.model_dump()
        data["runtime"]["artifacts"] = [a.model_dump() for a in artifacts or []]
        return cls(**data, truss_user_env=truss_user_env)

    def concept(self) -> spec.TrainingJob:
        """The job without what only the push needed."""
        data = self.model_dump(exclude={"truss_user_env"})
        data["runtime"].pop("artifacts")
        return spec.TrainingJob(**data)


class CreateTrainingJobRequestV1(_Request):
    training_job: CreateTrainingJobV1


class CreateTrainingJobResponseV1(_Response):
    training_job: TrainingJobV1


class GetTrainingJobResponseV1(_Response):
    training_project: TrainingProjectV1
    training_job: TrainingJobV1


class ListTrainingJobsResponseV1(_Response):
    training_project: TrainingProjectV1
    training_jobs: list[TrainingJobV1]


#: The fields a search can order by.
ORDER_FIELDS = ("created_at", "updated_at", "priority")


class OrderByV1(_Request):
    field: str
    order: str

    @field_validator("field")
    @classmethod
    def _field(cls, field: str) -> str:
        if field not in ORDER_FIELDS:
            raise ValueError(
                f"cannot order by {limits.shown(field)}; use one of {', '.join(ORDER_FIELDS)}"
            )
        return field

    @field_validator("order")
    @classmethod
    def _order(cls, order: str) -> str:
        if order.lower() not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {limits.shown(order)}")
        return order.lower()


class SearchTrainingJobsRequestV1(_Request):
    project_id: str | None = None
    job_id: str | None = None
    statuses: list[str] | None = Field(default=None, max_length=limits.MAX_SEARCH_STATUSES)
    order_by: list[OrderByV1] = Field(
        default_factory=lambda: [OrderByV1(field="created_at", order="desc")],
        max_length=len(ORDER_FIELDS),
    )

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, statuses: list[str] | None) -> list[str] | None:
        """Known statuses, as on the wire (``RUNNING`` and ``running`` are accepted)."""
        if statuses is None:
            return None
        try:
            return [spec.TrainingJobStatus.parse(s).value for s in statuses]
        except InvalidConfigError as exc:
            raise ValueError(str(exc)) from None


class SearchTrainingJobsResponseV1(_Response):
    training_jobs: list[TrainingJobV1]


class LocalJobPageV1(_Response):
    """``GET /v1/local/training_jobs``: a page of jobs, newest first, with how many match
    in all (not in Baseten's API, whose search answers every job at once)."""

    training_jobs: list[TrainingJobV1]
    total: int
    #: How many matching jobs are in each status (wire names).
    status_counts: dict[str, int]
    #: Whether jobs older than the page's last one match too.
    more: bool


class StopTrainingJobRequestV1(_Request):
    pass


class StopTrainingJobResponseV1(_Response):
    training_job: TrainingJobV1


class RecreateTrainingJobResponseV1(_Response):
    training_job: TrainingJobV1


class UpdateTrainingJobRequestV1(_Request):
    priority: int

    @field_validator("priority")
    @classmethod
    def _priority(cls, priority: int) -> int:
        return limits.check_int(priority, limits.MIN_PRIORITY, limits.MAX_PRIORITY)


class UpdateTrainingJobResponseV1(_Response):
    training_job: TrainingJobV1


class TrainingJobTombstoneV1(_Response):
    id: str
    deleted: bool
    training_project_id: str


class DownloadTrainingJobResponseV1(_Response):
    artifact_presigned_urls: list[str]


# --------------------------------------------------------------------------- logs


class SortOrderV1(str, enum.Enum):
    ASC = "asc"
    DESC = "desc"


class LogLevelV1(str, enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"

    @property
    def rank(self) -> int:
        return list(LogLevelV1).index(self)


class GetTrainingJobLogsRequestV1(_Request):
    """Query of ``GET .../logs``: a window in epoch millis, newest or oldest first."""

    start_epoch_millis: int | None = None
    end_epoch_millis: int | None = None
    direction: SortOrderV1 | None = None
    limit: int | None = Field(default=500, ge=1, le=MAX_LOG_LIMIT)
    min_level: LogLevelV1 | None = None

    _window = field_validator("start_epoch_millis", "end_epoch_millis")(_epoch_millis)


class LogV1(_Response):
    """One log line. ``timestamp`` is epoch nanoseconds as a string; ``replica`` the node."""

    timestamp: str
    message: str
    replica: str | None
    request_id: str | None = None
    level: LogLevelV1 | None = None


class GetLogsResponseV1(_Response):
    logs: list[LogV1]


class LocalFollowedLogV1(LogV1):
    """A log line of the local follow extension, with its position in the job's log."""

    cursor: int


class LocalFollowLogsResponseV1(_Response):
    """``GET /v1/local/.../logs/follow`` (not in Baseten's API: the local service's own)."""

    logs: list[LocalFollowedLogV1]
    cursor: int
    status: str
    done: bool
    #: Lines left out because the caller asked only for the newest ones (``tail``).
    skipped: int = 0


# --------------------------------------------------------------------------- local deployments


class LocalCreateDeploymentRequestV1(_Request):
    """``POST /v1/local/deployments``: serve a checkpoint of a job on this machine."""

    job_id: str
    checkpoint: str = "latest"
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        return name if name is None else limits.check_name(name, "a deployment name")

    #: A bundle whose cell defines ``class Model`` (``%%bt_model``); None serves a
    #: Hugging Face checkpoint with OpenAI-compatible completions.
    model_artifact: CreateTrainingJobS3Artifact | None = None
    port: int | None = Field(default=None, ge=1024, le=65535)


class LocalDeploymentV1(_Response):
    id: str
    name: str
    job_id: str
    checkpoint: str
    kind: str
    status: str
    url: str
    error_message: str | None = None
    created_at: datetime


class LocalListDeploymentsResponseV1(_Response):
    deployments: list[LocalDeploymentV1]


# --------------------------------------------------------------------------- metrics


class GetTrainingJobMetricsRequestV1(_Request):
    end_epoch_millis: int | None = None
    start_epoch_millis: int | None = None
    step_seconds: int | None = None

    _window = field_validator("start_epoch_millis", "end_epoch_millis")(_epoch_millis)

    @field_validator("step_seconds")
    @classmethod
    def _step(cls, step: int | None) -> int | None:
        return step if step is None else limits.check_int(step, 1, limits.MAX_STEP_SECONDS)


class TrainingJobMetricV1(_Response):
    value: float
    timestamp: datetime


class StorageMetricsV1(_Response):
    usage_bytes: list[TrainingJobMetricV1] = Field(default_factory=list)
    utilization: list[TrainingJobMetricV1] = Field(default_factory=list)


class TrainingJobMetricsV1(_Response):
    """One node's series; GPU series are keyed by GPU index."""

    gpu_memory_usage_bytes: dict[str, list[TrainingJobMetricV1]] = Field(default_factory=dict)
    gpu_utilization: dict[str, list[TrainingJobMetricV1]] = Field(default_factory=dict)
    cpu_usage: list[TrainingJobMetricV1] = Field(default_factory=list)
    cpu_memory_usage_bytes: list[TrainingJobMetricV1] = Field(default_factory=list)
    ephemeral_storage: StorageMetricsV1 = Field(default_factory=StorageMetricsV1)


class TrainingJobNodeMetricsV1(_Response):
    node_id: str
    metrics: TrainingJobMetricsV1


class GetTrainingJobMetricsResponseV1(TrainingJobMetricsV1):
    """Metrics of the leader node at the top level, every node in ``per_node_metrics``."""

    training_job: TrainingJobV1
    cache: StorageMetricsV1 | None
    per_node_metrics: list[TrainingJobNodeMetricsV1]


# --------------------------------------------------------------------------- checkpoints


class TrainingJobCheckpointV1(_Response):
    checkpoint_id: str
    created_at: datetime
    checkpoint_type: str
    base_model: str | None
    lora_adapter_config: dict[str, Any] | None
    size_bytes: int
    sync_status: str | None = None
    training_job_id: str


class GetTrainingJobCheckpointsResponseV1(_Response):
    training_job: TrainingJobV1
    checkpoints: list[TrainingJobCheckpointV1]


class CheckpointFile(_Response):
    url: str
    relative_file_name: str
    node_rank: int
    size_bytes: int
    last_modified: str


class GetTrainingJobCheckpointFilesResponseV1(_Response):
    presigned_urls: list[CheckpointFile]
    next_page_token: int | None = None
    total_count: int


# --------------------------------------------------------------------------- cache, blobs


class FileSummary(_Response):
    path: str
    size_bytes: int
    modified: str
    file_type: str
    permissions: str


class GetCacheSummaryResponseV1(_Response):
    timestamp: str
    project_id: str
    file_summaries: list[FileSummary]


class AuthCodeV1(_Response):
    """One node's interactive session: the device code to authenticate its tunnel."""

    session_id: str
    replica_id: str
    auth_code: str
    auth_url: str
    generated_at: str | None = None
    tunnel_name: str | None = None
    expires_at: str | None = None
    working_directory: str | None = None


class GetAuthCodesResponseV1(_Response):
    """Auth codes of a job's interactive sessions, one per node that has one."""

    auth_codes: list[AuthCodeV1]


class InteractiveSessionV1(_Response):
    id: str
    trigger: str
    timeout_minutes: int
    session_provider: str
    auth_provider: str
    pod_name: str
    expires_at: str | None = None
    tunnel_name: str | None = None
    auth_code: str | None = None
    auth_url: str | None = None
    auth_code_generated_at: str | None = None
    authenticated_at: str | None = None
    working_directory: str | None = None


class SignSSHCertificateRequestV1(_Request):
    """Sign a public key for one node of a job (``replica_id``: the node, ``"0"``...)."""

    public_key: str = Field(max_length=limits.MAX_SSH_PUBLIC_KEY_CHARS)
    replica_id: str | None = Field(default=None, max_length=limits.MAX_NAME_CHARS)


class SignSSHCertificateResponseV1(_Response):
    """A short-lived certificate for the SSH proxy, and the JWT the proxy admits it with."""

    ssh_certificate: str
    jwt: str
    proxy_address: str
    ssh_cert_expires_at: datetime


class PatchInteractiveSessionRequestV1(_Request):
    """Only what is given changes: ``timeout_minutes`` is added (-1: ten years)."""

    timeout_minutes: int | None = None
    trigger: spec.InteractiveSessionTrigger | None = None

    @field_validator("timeout_minutes")
    @classmethod
    def _minutes(cls, minutes: int | None) -> int | None:
        if minutes is None or minutes == -1:
            return minutes
        return limits.check_int(minutes, 1, limits.MAX_SESSION_MINUTES, " minutes")


class PatchInteractiveSessionResponseV1(_Response):
    interactive_session: InteractiveSessionV1
    message: str


class AWSCredentialsV1(_Response):
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str
    #: Not in Baseten's answer: where a stand-in (the local service) takes the upload.
    #: truss passes ``creds`` to boto3 as they are, so both clients honour it.
    endpoint_url: str | None = None


class GetBlobCredentialsResponseV1(_Response):
    creds: AWSCredentialsV1
    s3_key: str
    s3_bucket: str


# --------------------------------------------------------------------------- capacity


class TrainingGpuCapacityItemV1(_Response):
    """One (org, GPU type) pool: its limit and how many of its GPUs active jobs hold."""

    gpu_type: str
    baseline: int
    limit: int
    usage_count: int
    dedicated_usage_count: int = 0
    spot_usage_count: int = 0


class TeamTrainingGpuCapacityItemV1(TrainingGpuCapacityItemV1):
    """A team's cap within a pool (``baseline`` 0 where none is configured)."""

    team_id: str
    team_name: str


class GetTrainingGpuCapacityResponseV1(_Response):
    gpu_capacities: list[TrainingGpuCapacityItemV1]
    team_gpu_capacities: list[TeamTrainingGpuCapacityItemV1] = Field(default_factory=list)


class PatchTeamTrainingGpuCapacityRequestV1(_Request):
    team_id: str = Field(max_length=limits.MAX_NAME_CHARS)
    gpu_type: str = Field(max_length=limits.MAX_NAME_CHARS)
    max_gpus: int

    @field_validator("max_gpus")
    @classmethod
    def _max_gpus(cls, max_gpus: int) -> int:
        return limits.check_int(max_gpus, 0, limits.MAX_CAPACITY_GPUS)


class PatchTeamTrainingGpuCapacityResponseV1(_Response):
    team_gpu_capacity: TeamTrainingGpuCapacityItemV1


class CapacityAtSubmitV1(_Response):
    gpu_type: str
    max_gpus: int
    min_gpus: int | None = None
    last_modified: str


class ActiveJobAtSubmitV1(_Response):
    training_job_id: str
    training_job_name: str | None = None
    instance_type_name: str
    total_gpus: int
    workload_plane_name: str
    status_at_submit: str
    status_set_at: str


class PendingJobAheadAtSubmitV1(_Response):
    training_job_id: str
    training_job_name: str | None = None
    instance_type_name: str
    requested_gpus: int
    priority: int
    submitted_at: str


class QueueEventV1(_Response):
    training_job_id: str
    training_job_name: str | None = None
    status: str
    created: str
    event_message: str | None = None
    exit_code: int | None = None


class GetTrainingJobQueueContextResponseV1(_Response):
    """Why a job sat (or sits) in PENDING: its pool, who held it, who was ahead."""

    target_job_id: str
    target_job_name: str | None = None
    gpu_type: str
    requested_gpus: int
    submitted_at: str
    released_at: str | None = None
    pending_seconds: int | None = None
    org_capacity: CapacityAtSubmitV1 | None = None
    team_capacity: CapacityAtSubmitV1 | None = None
    active_at_submit: list[ActiveJobAtSubmitV1]
    pending_ahead_at_submit: list[PendingJobAheadAtSubmitV1]
    events: list[QueueEventV1]
    events_window_end: str
