"""Baseten's training concepts as pydantic models: the only place they are defined.

Field names, field order, defaults and the JSON they serialize to are those of Baseten's
``truss_train`` SDK, so a job built here and one built with ``truss_train`` produce the
same request body (tests/test_interop_truss.py proves it). Inputs are accepted more
liberally than they are written ("H100:8" for an accelerator, ``enable_legacy_hf_cache``
for the legacy HF mount, ``truss_train`` objects for ours), and every invalid value
raises :class:`~bt_jupyter.errors.InvalidConfigError` with one line naming the field and
what is allowed.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from typing_extensions import Self, TypedDict, Unpack

from bt_jupyter import limits
from bt_jupyter.errors import InvalidConfigError

__all__ = [
    "ACCELERATORS",
    "AcceleratorSpec",
    "AvailabilityModel",
    "AWSAssumeRoleDockerAuth",
    "AWSIAMDockerAuth",
    "AWSOIDCDockerAuth",
    "BasetenCheckpoint",
    "CacheConfig",
    "CheckpointingConfig",
    "Compute",
    "DockerAuth",
    "DockerAuthType",
    "GCPOIDCDockerAuth",
    "GCPServiceAccountJSONDockerAuth",
    "Image",
    "InteractiveSession",
    "InteractiveSessionTrigger",
    "LatestCheckpoint",
    "LoadCheckpointConfig",
    "LoopsCheckpoint",
    "NamedCheckpoint",
    "RegistrySecretDockerAuth",
    "Runtime",
    "SecretReference",
    "TrainingJob",
    "TrainingJobStatus",
    "TrainingProject",
    "WeightsSource",
    "Workspace",
    "as_training_project",
    "with_push_options",
    "PushFlags",
    "invalid_config",
]

#: GPU types Baseten Training schedules (the public values of truss's ``Accelerator``).
ACCELERATORS: tuple[str, ...] = (
    "T4",
    "L4",
    "A10G",
    "V100",
    "A100",
    "A100_40GB",
    "H100",
    "H100_40GB",
    "H200",
    "B200",
    "B300",
    "GB300",
    "L40S",
    "RTX_PRO_6000",
)
#: Top-level folders of a node a weights mount may not cover.
_SYSTEM_ROOTS = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "run", "sbin", "sys", "usr"}
)
DEFAULT_CHECKPOINT_DOWNLOAD_FOLDER = "/tmp/loaded_checkpoints"
DEFAULT_CACHE_MOUNT_BASE_PATH = "/root/.cache"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
#: More memory than any node has: a larger quantity is a typo, refused (not overflowed).
MAX_MEMORY_BYTES = limits.MAX_MEMORY_BYTES


def memory_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes-style quantity (``64Gi``, ``1.5G``, ``512Mi``, ``1000``)."""
    match = _MEMORY.match(quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    unit = match.group(2) or ""
    base = 1024 if unit.endswith("i") else 1000
    power = " KMGT".index(unit[:1]) if unit else 0
    return int(min(float(match.group(1)) * base**power, 2.0**62))


# --------------------------------------------------------------------------- errors


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model class that owns the last field of ``loc`` (for "allowed fields")."""
    current = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue
        nested = _first_model(field.annotation)
        if nested is None:
            break
        current = nested
    return current


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _path(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """``TrainingJob.runtime.load_checkpoint_config.checkpoints[0].job_id``."""
    path = model.__name__
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif i and isinstance(loc[i - 1], int) and part in _UNION_TAGS:
            continue  # the tag pydantic adds for the branch of a discriminated union
        elif len(part) > limits.SHOWN_CHARS or not part.isidentifier():
            path += f"[{limits.shown(part)}]"  # a key the input chose (an env var name)
        else:
            path += f".{part}"
    return path


def _describe(model: type[BaseModel], error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    where = _path(model, loc)
    kind = error["type"]
    if kind == "value_error":
        return f"{where}: {_cut(str(error['ctx']['error']))}"
    if kind == "missing":
        return f"{where}: required, but not given"
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = ", ".join(owner.model_fields)
        return f"{where}: unknown field; {owner.__name__} accepts {allowed}"
    return f"{where}: {_cut(error['msg'])}, got {limits.shown(error['input'])}"


def _cut(text: str, most: int = 200) -> str:
    """A message of pydantic's (or a validator's) on one line and never long: some quote
    the whole input."""
    text = " ".join(text.split())
    return text if len(text) <= most else f"{text[: most - 3]}..."


def invalid_config(model: type[BaseModel], exc: ValidationError) -> InvalidConfigError:
    """The one-line error for a pydantic failure of ``model`` (also used by the service):
    the first few problems, each quoting at most a little of the input."""
    errors = exc.errors(include_url=False)
    shown = [_describe(model, e) for e in errors[: limits.MAX_ERRORS_SHOWN]]
    more = len(errors) - len(shown)
    return InvalidConfigError("; ".join(shown) + (f"; and {more} more" if more > 0 else ""))


class _Concept(BaseModel):
    """Base of every concept: unknown fields are refused, errors are one line."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_by_name=True,
        validate_by_alias=True,
        # the bound of every text field that has none of its own (limits.py)
        str_max_length=limits.MAX_COMMAND_CHARS,
    )

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_config(type(self), exc) from None

    # Nested validation must not go through __init__ (errors are rendered once, at the top).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise invalid_config(type(self), exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise invalid_config(cls, exc) from None

    @model_validator(mode="before")
    @classmethod
    def _from_foreign(cls, data: Any) -> Any:
        """A ``truss_train`` object of the same concept becomes plain data we validate."""
        if isinstance(data, BaseModel) and not isinstance(data, _Concept):
            return data.model_dump(mode="json")
        return data

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any) -> Self:  # type: ignore[override]
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise invalid_config(cls, exc) from None


# --------------------------------------------------------------------------- image


class SecretReference(_Concept):
    """A secret by name; its value is resolved by the service, never by the client."""

    name: str

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        return limits.check_path_segment(name, "a secret name")


class DockerAuthType(str, enum.Enum):
    GCP_SERVICE_ACCOUNT_JSON = "GCP_SERVICE_ACCOUNT_JSON"
    AWS_IAM = "AWS_IAM"
    AWS_OIDC = "AWS_OIDC"
    GCP_OIDC = "GCP_OIDC"
    REGISTRY_SECRET = "REGISTRY_SECRET"
    AWS_ASSUME_ROLE = "AWS_ASSUME_ROLE"


NonEmpty = Annotated[str, Field(min_length=1)]
#: A project's name and a team's (a folder of the team's cache: no path), bounded by
#: :mod:`bt_jupyter.limits`; the API's request models take the same types.
ProjectName = Annotated[str, AfterValidator(lambda n: limits.check_name(n, "a project name"))]
TeamName = Annotated[str, AfterValidator(lambda n: limits.check_path_segment(n, "a team name"))]


class AWSIAMDockerAuth(_Concept):
    access_key_secret_ref: SecretReference
    secret_access_key_secret_ref: SecretReference


class AWSOIDCDockerAuth(_Concept):
    role_arn: NonEmpty
    region: NonEmpty


class AWSAssumeRoleDockerAuth(_Concept):
    role_arn: NonEmpty
    region: NonEmpty


class GCPOIDCDockerAuth(_Concept):
    service_account: NonEmpty
    workload_identity_provider: NonEmpty


class GCPServiceAccountJSONDockerAuth(_Concept):
    service_account_json_secret_ref: SecretReference


class RegistrySecretDockerAuth(_Concept):
    secret_ref: SecretReference


_AUTH_FIELD: dict[DockerAuthType, str] = {
    DockerAuthType.AWS_IAM: "aws_iam_docker_auth",
    DockerAuthType.AWS_OIDC: "aws_oidc_docker_auth",
    DockerAuthType.AWS_ASSUME_ROLE: "aws_assume_role_docker_auth",
    DockerAuthType.GCP_OIDC: "gcp_oidc_docker_auth",
    DockerAuthType.GCP_SERVICE_ACCOUNT_JSON: "gcp_service_account_json_docker_auth",
    DockerAuthType.REGISTRY_SECRET: "registry_secret_docker_auth",
}


class DockerAuth(_Concept):
    """Credentials for a private registry: ``auth_method`` picks exactly one detail field."""

    auth_method: DockerAuthType
    registry: NonEmpty
    aws_iam_docker_auth: AWSIAMDockerAuth | None = None
    aws_oidc_docker_auth: AWSOIDCDockerAuth | None = None
    aws_assume_role_docker_auth: AWSAssumeRoleDockerAuth | None = None
    gcp_oidc_docker_auth: GCPOIDCDockerAuth | None = None
    gcp_service_account_json_docker_auth: GCPServiceAccountJSONDockerAuth | None = None
    registry_secret_docker_auth: RegistrySecretDockerAuth | None = None

    @model_validator(mode="after")
    def _one_detail(self) -> Self:
        required = _AUTH_FIELD[self.auth_method]
        if getattr(self, required) is None:
            raise ValueError(f"auth_method {self.auth_method.value} needs {required}")
        others = [f for f in _AUTH_FIELD.values() if f != required and getattr(self, f)]
        if others:
            raise ValueError(
                f"{', '.join(others)} cannot be set when auth_method is {self.auth_method.value}"
            )
        return self


class Image(_Concept):
    """The container the job runs in."""

    base_image: NonEmpty
    docker_auth: DockerAuth | None = None


# --------------------------------------------------------------------------- compute


class AvailabilityModel(str, enum.Enum):
    """``dedicated`` capacity is never preempted; ``spot`` may be (checkpoint often)."""

    DEDICATED = "dedicated"
    SPOT = "spot"


class AcceleratorSpec(_Concept):
    """A GPU type and how many of it each node gets; parses ``"H100:8"`` and ``"H100"``."""

    accelerator: str
    count: int = 1

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            kind, _, count = value.strip().partition(":")
            if not count:
                return {"accelerator": kind, "count": 1}
            if not (count.isascii() and count.isdigit()):
                raise ValueError(
                    f"count in {limits.shown(value)} must be a positive integer, e.g. 'H100:8'"
                )
            if len(count) > 6:
                raise ValueError(
                    f"GPU count in {limits.shown(value)} must be <= {limits.MAX_GPUS_PER_NODE}"
                )
            return {"accelerator": kind, "count": int(count)}
        if isinstance(value, BaseModel) and not isinstance(value, AcceleratorSpec):
            data = value.model_dump(mode="json")  # truss's AcceleratorSpec
            return {"accelerator": data.get("accelerator"), "count": data.get("count", 1)}
        return value

    @field_validator("accelerator", mode="before")
    @classmethod
    def _known(cls, name: Any) -> Any:
        if not isinstance(name, str) or name.upper() not in ACCELERATORS:
            raise ValueError(
                f"unknown accelerator {limits.shown(name)}; valid: {', '.join(ACCELERATORS)}"
            )
        return name.upper()

    @field_validator("count")
    @classmethod
    def _positive(cls, count: int) -> int:
        try:
            return limits.check_int(count, 1, limits.MAX_GPUS_PER_NODE)
        except ValueError as exc:
            raise ValueError(f"GPU count {exc}") from None

    def __str__(self) -> str:
        return f"{self.accelerator}:{self.count}"


class Compute(_Concept):
    """Nodes and what each node gets: CPUs, memory, GPUs, and the capacity model."""

    node_count: int = 1
    cpu_count: int = 1
    memory: str = "2Gi"
    accelerator: AcceleratorSpec | None = None
    availability_model: AvailabilityModel = AvailabilityModel.DEDICATED

    @field_validator("node_count")
    @classmethod
    def _nodes(cls, value: int) -> int:
        return limits.check_int(value, 1, limits.MAX_NODE_COUNT)

    @field_validator("cpu_count")
    @classmethod
    def _cpus(cls, value: int) -> int:
        return limits.check_int(value, 1, limits.MAX_CPU_COUNT)

    @field_validator("memory")
    @classmethod
    def _quantity(cls, memory: str) -> str:
        if not _MEMORY.match(memory):
            raise ValueError(
                f"{limits.shown(memory)} is not a memory quantity; use a number with an "
                "optional unit Ki, Mi, Gi, Ti (e.g. '64Gi')"
            )
        if memory_bytes(memory) > MAX_MEMORY_BYTES:
            shown = memory if len(memory) <= 20 else f"{memory[:8]}...{memory[-4:]}"
            raise ValueError(f"{shown!r} is more memory than any node has (at most 64Ti)")
        return memory

    @property
    def memory_bytes(self) -> int:
        """The memory each node gets, in bytes (what a node's OOM killer enforces)."""
        return memory_bytes(self.memory)

    def describe(self) -> str:
        """``"2 x H100:8"``, ``"1 x CPU"``: how the widget and CLI show compute."""
        return f"{self.node_count} x {self.accelerator or 'CPU'}"


# --------------------------------------------------------------------------- runtime


class CheckpointingConfig(_Concept):
    """Where the job writes checkpoints (``$BT_CHECKPOINT_DIR``) and how big that volume is."""

    enabled: bool = False
    checkpoint_path: str | None = None
    volume_size_gib: int | None = None

    @field_validator("volume_size_gib")
    @classmethod
    def _positive(cls, size: int | None) -> int | None:
        return size if size is None else limits.check_int(size, 1, limits.MAX_VOLUME_GIB, " GiB")


class LatestCheckpoint(_Concept):
    """The newest checkpoint of a job, or of a project's jobs."""

    typ: Literal["baseten_latest_checkpoint"] = "baseten_latest_checkpoint"
    job_id: str | None = None
    project_name: str | None = None

    @field_validator("job_id", "project_name")
    @classmethod
    def _names(cls, name: str | None) -> str | None:
        return name if name is None else limits.check_name(name)


class NamedCheckpoint(_Concept):
    """One checkpoint by name (a top-level entry of ``rank-N/``) of one job."""

    typ: Literal["baseten_named_checkpoint"] = "baseten_named_checkpoint"
    checkpoint_name: NonEmpty
    job_id: NonEmpty

    @field_validator("checkpoint_name")
    @classmethod
    def _checkpoint(cls, name: str) -> str:
        return limits.check_relative_path(name, "a checkpoint name")

    @field_validator("job_id")
    @classmethod
    def _job(cls, job_id: str) -> str:
        return limits.check_name(job_id, "a job id")


class LoopsCheckpoint(_Concept):
    """A checkpoint of a Baseten Loops run: ``trainer`` state or ``sampler`` weights."""

    typ: Literal["loops_checkpoint"] = "loops_checkpoint"
    run_id: NonEmpty
    checkpoint_name: NonEmpty
    target: Literal["trainer", "sampler"] = "trainer"

    @field_validator("run_id", "checkpoint_name")
    @classmethod
    def _names(cls, name: str) -> str:
        return limits.check_relative_path(name)

    @classmethod
    def from_checkpoint(
        cls, run_id: str, checkpoint_name: str, target: Literal["trainer", "sampler"] = "trainer"
    ) -> LoopsCheckpoint:
        """truss_train's spelling."""
        return cls(run_id=run_id, checkpoint_name=checkpoint_name, target=target)


CheckpointReference = Annotated[
    LatestCheckpoint | NamedCheckpoint | LoopsCheckpoint, Field(discriminator="typ")
]

_UNION_TAGS = frozenset(
    c.model_fields["typ"].default for c in (LatestCheckpoint, NamedCheckpoint, LoopsCheckpoint)
)


class BasetenCheckpoint:
    """Factories with the names truss_train users know."""

    @staticmethod
    def from_latest_checkpoint(
        project_name: str | None = None, job_id: str | None = None
    ) -> LatestCheckpoint:
        if not project_name and not job_id:
            raise InvalidConfigError(
                "BasetenCheckpoint.from_latest_checkpoint: give project_name or job_id"
            )
        return LatestCheckpoint(project_name=project_name, job_id=job_id)

    @staticmethod
    def from_named_checkpoint(checkpoint_name: str, job_id: str) -> NamedCheckpoint:
        return NamedCheckpoint(checkpoint_name=checkpoint_name, job_id=job_id)


def _latest() -> CheckpointReference:
    return LatestCheckpoint()


class LoadCheckpointConfig(_Concept):
    """Checkpoints placed under ``$BT_LOAD_CHECKPOINT_DIR`` before the job starts."""

    enabled: bool = False
    checkpoints: list[CheckpointReference] = Field(
        default_factory=lambda: [_latest()], max_length=limits.MAX_CHECKPOINT_REFERENCES
    )
    download_folder: str = DEFAULT_CHECKPOINT_DOWNLOAD_FOLDER


class CacheConfig(_Concept):
    """The read-write cache that persists across a project's (and team's) jobs.

    ``enable_legacy_hf_cache`` (the name in Baseten's concept docs) is accepted for
    ``enable_legacy_hf_mount`` (the wire name); both read back the same value.
    """

    enabled: bool = False
    enable_legacy_hf_mount: bool = Field(
        default=False,
        validation_alias=AliasChoices("enable_legacy_hf_mount", "enable_legacy_hf_cache"),
    )
    require_cache_affinity: bool = True
    mount_base_path: str = DEFAULT_CACHE_MOUNT_BASE_PATH

    @field_validator("mount_base_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must be an absolute path, got {path!r}")
        return path

    @property
    def enable_legacy_hf_cache(self) -> bool:
        return self.enable_legacy_hf_mount


EnvValue = str | SecretReference


class Runtime(_Concept):
    """What runs on each node: commands, environment, cache and checkpoints."""

    start_commands: list[str] = Field(default_factory=list, max_length=limits.MAX_COMMANDS)
    environment_variables: dict[str, EnvValue] = Field(
        default_factory=dict, max_length=limits.MAX_ENV_VARS
    )
    enable_cache: bool | None = None
    checkpointing_config: CheckpointingConfig = Field(default_factory=CheckpointingConfig)
    load_checkpoint_config: LoadCheckpointConfig | None = None
    cache_config: CacheConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrate_enable_cache(cls, values: Any) -> Any:
        """``enable_cache`` is deprecated: it becomes a cache_config, as in truss_train."""
        if not isinstance(values, Mapping):
            return values
        values = dict(values)
        enable_cache = values.pop("enable_cache", None)
        if enable_cache is not None:
            if values.get("cache_config") is not None:
                raise ValueError(
                    "set cache_config or the deprecated enable_cache, not both; "
                    "prefer cache_config=CacheConfig(enabled=True)"
                )
            values["cache_config"] = {
                "enabled": enable_cache,
                "enable_legacy_hf_mount": enable_cache,
            }
        return values

    @field_validator("start_commands")
    @classmethod
    def _commands(cls, commands: list[str]) -> list[str]:
        for i, command in enumerate(commands):
            limits.check_no_nul(command, f"start command {i}", limits.MAX_COMMAND_CHARS)
        return commands

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _env(cls, env: Any) -> Any:
        if not isinstance(env, Mapping):
            return env
        limits.check_count(env, limits.MAX_ENV_VARS, "environment variables")
        checked: dict[str, Any] = {}
        for name, value in env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(
                    f"{limits.shown(name)} is not a valid environment variable name; use "
                    "letters, digits and underscores, not starting with a digit"
                )
            if len(name) > limits.MAX_ENV_NAME_CHARS:
                raise ValueError(
                    f"environment variable name {limits.shown(name)} is longer than "
                    f"{limits.MAX_ENV_NAME_CHARS} characters"
                )
            if isinstance(value, str):
                limits.check_no_nul(value, f"value of {name}", limits.MAX_ENV_VALUE_CHARS)
            if isinstance(value, BaseModel) and hasattr(value, "name"):
                value = SecretReference(name=value.name)
            elif isinstance(value, Mapping):
                value = SecretReference.model_validate(value)
            elif not isinstance(value, str):
                raise ValueError(
                    f"value of {name} must be a str or SecretReference(name=...), "
                    f"got {type(value).__name__}"
                )
            checked[name] = value
        return checked


# --------------------------------------------------------------------------- job


class InteractiveSessionTrigger(str, enum.Enum):
    ON_STARTUP = "on_startup"
    ON_FAILURE = "on_failure"
    ON_DEMAND = "on_demand"


class InteractiveSession(_Concept):
    trigger: InteractiveSessionTrigger = InteractiveSessionTrigger.ON_DEMAND
    timeout_minutes: int = 8 * 60
    session_provider: Literal["vs_code", "cursor", "ssh"] = "vs_code"
    auth_provider: Literal["github", "microsoft"] = "microsoft"

    @field_validator("timeout_minutes")
    @classmethod
    def _timeout(cls, minutes: int) -> int:
        return limits.check_int(minutes, 1, limits.MAX_SESSION_MINUTES, " minutes")


class Workspace(_Concept):
    """Which directories ``truss train push`` gathers into the job's files."""

    workspace_root: str | None = None
    external_dirs: list[str] = Field(default_factory=list, max_length=limits.MAX_LIST_ITEMS)
    exclude_dirs: list[str] = Field(default_factory=list, max_length=limits.MAX_LIST_ITEMS)


class WeightsSource(_Concept):
    """Model weights mounted read-only into the job (hf://, s3://, gs://, ...)."""

    source: NonEmpty
    mount_location: NonEmpty
    auth: dict[str, Any] | None = None
    auth_secret_name: str | None = None
    allow_patterns: list[str] | None = Field(default=None, max_length=limits.MAX_LIST_ITEMS)
    ignore_patterns: list[str] | None = Field(default=None, max_length=limits.MAX_LIST_ITEMS)

    @field_validator("mount_location")
    @classmethod
    def _mount(cls, where: str) -> str:
        """Absolute (as truss requires), written plainly, and not over the node's own
        system folders (a mount there would hide what the image needs to run)."""
        limits.check_no_nul(where, "mount_location", limits.MAX_NAME_CHARS * 4)
        if not where.startswith("/"):
            raise ValueError(f"mount_location must be an absolute path, got {limits.shown(where)}")
        plain = posixpath.normpath(where)
        if plain != (where.rstrip("/") or "/"):  # "..", ".", "//" in it
            raise ValueError(
                f"mount_location {limits.shown(where)} is not a plain path; write {plain!r}"
            )
        top = plain.split("/")[1] if plain != "/" else ""
        if not top or top in _SYSTEM_ROOTS:
            raise ValueError(
                f"mount_location {limits.shown(where)} would hide the node's system files; "
                "mount under a folder of your own, e.g. /models/base or /app/data"
            )
        return where

    @field_validator("source")
    @classmethod
    def _scheme(cls, source: str) -> str:
        schemes = ("hf://", "s3://", "gs://", "azure://", "r2://", "cw://", "https://")
        if not source.startswith(schemes):
            raise ValueError(
                f"{limits.shown(source)} needs a scheme; use one of {', '.join(schemes)}"
            )
        return source


class TrainingJob(_Concept):
    """One complete execution: image + compute + runtime."""

    image: Image
    compute: Compute = Field(default_factory=Compute)
    runtime: Runtime = Field(default_factory=Runtime)
    interactive_session: InteractiveSession | None = None
    name: str | None = None
    priority: int | None = None
    workspace: Workspace | None = None
    weights: list[WeightsSource] = Field(default_factory=list, max_length=limits.MAX_LIST_ITEMS)
    enable_baseten_workdir: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        return name if name is None else limits.check_name(name, "a job name")

    @field_validator("weights")
    @classmethod
    def _mounts_apart(cls, weights: list[WeightsSource]) -> list[WeightsSource]:
        """Each source its own mount_location, none inside another's."""
        seen: list[str] = []
        for source in weights:
            where = posixpath.normpath(source.mount_location)
            for other in seen:
                if where == other or where.startswith(f"{other}/") or other.startswith(f"{where}/"):
                    same = "is also" if where == other else "overlaps"
                    raise ValueError(
                        f"mount_location {where!r} {same} {other!r}: each weights source "
                        "needs a folder of its own"
                    )
            seen.append(where)
        return weights

    @field_validator("priority")
    @classmethod
    def _priority(cls, priority: int | None) -> int | None:
        if priority is None:
            return None
        return limits.check_int(priority, limits.MIN_PRIORITY, limits.MAX_PRIORITY)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body truss_train sends for this job (``training_job`` of the request)."""
        return self.model_dump(mode="json")


class TrainingProject(_Concept):
    """Groups jobs; upserted by name. ``job`` is the job a push creates (not sent)."""

    name: ProjectName
    job: TrainingJob = Field(exclude=True)
    team_name: TeamName | None = None

    def to_wire(self) -> dict[str, Any]:
        """The body truss_train upserts (``training_project`` of the request)."""
        return self.model_dump(mode="json", exclude_none=True)


def as_training_project(project: Any) -> TrainingProject:
    """Accept our TrainingProject or a ``truss_train.TrainingProject`` (converted)."""
    if isinstance(project, TrainingProject):
        return project
    job = getattr(project, "job", None)
    if isinstance(project, BaseModel) and isinstance(job, BaseModel):
        return TrainingProject(
            name=getattr(project, "name", ""),
            team_name=getattr(project, "team_name", None),
            job=TrainingJob.model_validate(job.model_dump(mode="json")),
        )
    raise InvalidConfigError(
        f"expected a TrainingProject (bt_jupyter.spec or truss_train), got {type(project).__name__}"
    )


class PushFlags(TypedDict, total=False):
    """``truss train push``'s flags that change the job (see :func:`with_push_options`)."""

    job_name: str
    entrypoint: str
    priority: int
    accelerator: str
    node_count: int
    spot: bool


def with_push_options(
    project: TrainingProject, **flags: Unpack[PushFlags]
) -> tuple[TrainingProject, list[str]]:
    """The project as ``truss train push`` runs it with these flags: ``--entrypoint``
    replaces the start commands, the others replace their config value, ``--spot`` sets
    spot capacity. Returns the new project and, as truss warns, what each flag overrode.
    Each value is checked as its field checks it (one clear line when it is wrong)."""
    job, notes = project.job, []
    update: dict[str, Any] = {}
    compute: dict[str, Any] = {}
    job_name, entrypoint = flags.get("job_name"), flags.get("entrypoint")
    priority, accelerator = flags.get("priority"), flags.get("accelerator")
    node_count, spot = flags.get("node_count"), flags.get("spot", False)
    if job_name is not None:
        if job.name:
            notes.append(f"job name {job.name!r} replaced by {job_name!r}")
        update["name"] = TrainingJob(image=job.image, name=job_name).name
    if accelerator is not None:
        if job.compute.accelerator is not None:
            notes.append(f"accelerator '{job.compute.accelerator}' replaced by {accelerator!r}")
        compute["accelerator"] = Compute(accelerator=accelerator).accelerator
    if node_count is not None:
        if job.compute.node_count != 1:
            notes.append(f"node_count {job.compute.node_count} replaced by {node_count}")
        compute["node_count"] = Compute(node_count=node_count).node_count
    if spot:
        compute["availability_model"] = AvailabilityModel.SPOT
    if entrypoint is not None:
        if job.runtime.start_commands:
            notes.append(f"start_commands {job.runtime.start_commands} replaced by {entrypoint!r}")
        commands = Runtime(start_commands=[entrypoint]).start_commands
        update["runtime"] = job.runtime.model_copy(update={"start_commands": commands})
    if priority is not None:
        if job.priority is not None:
            notes.append(f"priority {job.priority} replaced by {priority}")
        update["priority"] = TrainingJob(image=job.image, priority=priority).priority
    if compute:
        update["compute"] = job.compute.model_copy(update=compute)
    return project.model_copy(update={"job": job.model_copy(update=update)}), notes


# --------------------------------------------------------------------------- status


class TrainingJobStatus(str, enum.Enum):
    """``current_status``: PENDING | QUEUED -> CREATED -> DEPLOYING -> RUNNING -> COMPLETED.

    Every status truss 0.18 knows is a member. A status Baseten adds later is read as a
    pseudo-member (:meth:`from_wire`): shown as it is and treated as live, never an error,
    so one new status cannot break ``wait()``, the widget or a project's job list.
    """

    PENDING = "TRAINING_JOB_PENDING"
    QUEUED = "TRAINING_JOB_QUEUED"
    CREATED = "TRAINING_JOB_CREATED"
    DEPLOYING = "TRAINING_JOB_DEPLOYING"
    RUNNING = "TRAINING_JOB_RUNNING"
    COMPLETED = "TRAINING_JOB_COMPLETED"
    FAILED = "TRAINING_JOB_FAILED"
    STOPPED = "TRAINING_JOB_STOPPED"
    DEPLOY_FAILED = "TRAINING_JOB_DEPLOY_FAILED"

    @classmethod
    def _missing_(cls, value: object) -> TrainingJobStatus | None:
        if not isinstance(value, str) or not value.strip():
            return None
        found = _UNKNOWN.get(value)
        if found is None:
            found = str.__new__(cls, value)
            found._name_ = value.removeprefix("TRAINING_JOB_")
            found._value_ = value
            _UNKNOWN[value] = found
        return found

    @classmethod
    def from_wire(cls, value: str) -> TrainingJobStatus:
        """The status a service sent; an unknown one is kept as is (see the class doc)."""
        return cls(value)

    @property
    def short(self) -> str:
        """``RUNNING`` for ``TRAINING_JOB_RUNNING``: what people read."""
        return self.name

    @property
    def is_known(self) -> bool:
        return self.name in TrainingJobStatus.__members__

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_failure(self) -> bool:
        return self in (TrainingJobStatus.FAILED, TrainingJobStatus.DEPLOY_FAILED)

    @property
    def is_waiting(self) -> bool:
        """Waiting for capacity: the job's ``error_message`` is queue advice, not an error."""
        return self in (TrainingJobStatus.PENDING, TrainingJobStatus.QUEUED)

    def can_become(self, other: TrainingJobStatus) -> bool:
        return other in _NEXT.get(self, frozenset())

    @classmethod
    def parse(cls, value: str | TrainingJobStatus) -> TrainingJobStatus:
        """Accept ``TRAINING_JOB_RUNNING``, ``RUNNING`` or ``running`` (user input: an
        unknown name is an error here, unlike :meth:`from_wire`)."""
        if isinstance(value, TrainingJobStatus):
            return value
        name = value.strip().upper().removeprefix("TRAINING_JOB_")
        if name not in cls.__members__:
            valid = ", ".join(cls.__members__)
            raise InvalidConfigError(f"unknown job status {value!r}; valid: {valid}")
        return cls[name]


_UNKNOWN: dict[str, TrainingJobStatus] = {}
_S = TrainingJobStatus
_TERMINAL = frozenset({_S.COMPLETED, _S.FAILED, _S.STOPPED, _S.DEPLOY_FAILED})
#: Allowed status changes. Stop and failure are possible from every live state.
_NEXT: dict[TrainingJobStatus, frozenset[TrainingJobStatus]] = {
    _S.PENDING: frozenset({_S.QUEUED, _S.CREATED, _S.STOPPED, _S.FAILED}),
    _S.QUEUED: frozenset({_S.PENDING, _S.CREATED, _S.STOPPED, _S.FAILED}),
    _S.CREATED: frozenset({_S.DEPLOYING, _S.STOPPED, _S.FAILED, _S.DEPLOY_FAILED}),
    _S.DEPLOYING: frozenset({_S.RUNNING, _S.STOPPED, _S.FAILED, _S.DEPLOY_FAILED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.STOPPED, _S.FAILED}),
    **{terminal: frozenset() for terminal in _TERMINAL},
}
