"""Every model of bt_jupyter.api, serialized, validates against its schema in Baseten's spec."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from bt_jupyter import api, spec
from tests.openapi import OpenAPI

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=timezone.utc)

INSTANCE = api.InstanceTypeV1(
    id="H100:8x2",
    name="H100 x8",
    memory_limit_mib=1_048_576,
    millicpu_limit=96_000,
    gpu_count=8,
    gpu_type="H100",
    gpu_memory_limit_mib=81_920,
)
JOB = api.TrainingJobV1(
    id="job-1",
    created_at=NOW,
    current_status=spec.TrainingJobStatus.RUNNING.value,
    error_message=None,
    instance_type=INSTANCE,
    node_count=2,
    updated_at=NOW,
    training_project_id="proj-1",
    training_project=api.TrainingProjectSummaryV1(id="proj-1", name="llama-sft"),
    name="sft-run",
    priority=3,
    availability_model=spec.AvailabilityModel.SPOT,
    user=api.UserV1(email="ml@example.com"),
)
PROJECT = api.TrainingProjectV1(
    id="proj-1", name="llama-sft", created_at=NOW, updated_at=NOW, latest_job=JOB
)
METRIC = api.TrainingJobMetricV1(value=0.5, timestamp=NOW)
STORAGE = api.StorageMetricsV1(usage_bytes=[METRIC], utilization=[METRIC])
NODE_METRICS = api.TrainingJobMetricsV1(
    gpu_memory_usage_bytes={"0": [METRIC]},
    gpu_utilization={"0": [METRIC]},
    cpu_usage=[METRIC],
    cpu_memory_usage_bytes=[METRIC],
    ephemeral_storage=STORAGE,
)
FULL_JOB = spec.TrainingJob(
    image=spec.Image(
        base_image="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
        docker_auth=spec.DockerAuth(
            auth_method=spec.DockerAuthType.REGISTRY_SECRET,
            registry="ghcr.io",
            registry_secret_docker_auth=spec.RegistrySecretDockerAuth(
                secret_ref=spec.SecretReference(name="ghcr")
            ),
        ),
    ),
    compute=spec.Compute(node_count=2, accelerator="H100:8", availability_model="spot"),
    runtime=spec.Runtime(
        start_commands=["python -m bt_jupyter.runtime"],
        environment_variables={"HF_TOKEN": spec.SecretReference(name="hf_token"), "A": "1"},
        checkpointing_config=spec.CheckpointingConfig(enabled=True, volume_size_gib=100),
        load_checkpoint_config=spec.LoadCheckpointConfig(
            enabled=True, checkpoints=[spec.NamedCheckpoint(checkpoint_name="c", job_id="j")]
        ),
        cache_config=spec.CacheConfig(enabled=True, enable_legacy_hf_cache=True),
    ),
    name="sft-run",
    priority=2,
    weights=[spec.WeightsSource(source="hf://org/model@main", mount_location="/app/base")],
)

SESSION = api.InteractiveSessionV1(
    id="s-1",
    trigger="on_startup",
    timeout_minutes=480,
    session_provider="vs_code",
    auth_provider="github",
    pod_name="0",
    expires_at=NOW.isoformat(),
)
TEAM_CAPACITY = api.TeamTrainingGpuCapacityItemV1(
    team_id="t", team_name="t", gpu_type="H100", baseline=0, limit=8, usage_count=1
)
CAPACITY_AT_SUBMIT = api.CapacityAtSubmitV1(
    gpu_type="H100", max_gpus=16, min_gpus=None, last_modified=NOW.isoformat()
)
ACTIVE_AT_SUBMIT = api.ActiveJobAtSubmitV1(
    training_job_id="job-1",
    training_job_name="a",
    instance_type_name="H100:8",
    total_gpus=16,
    workload_plane_name="local",
    status_at_submit="TRAINING_JOB_RUNNING",
    status_set_at=NOW.isoformat(),
)
PENDING_AHEAD = api.PendingJobAheadAtSubmitV1(
    training_job_id="job-0",
    instance_type_name="H100:8",
    requested_gpus=8,
    priority=10,
    submitted_at=NOW.isoformat(),
)
QUEUE_EVENT = api.QueueEventV1(
    training_job_id="job-1", status="TRAINING_JOB_COMPLETED", created=NOW.isoformat()
)

EXAMPLES: list[BaseModel] = [
    api.UpsertTrainingProjectRequestV1.of(spec.TrainingProject(name="llama-sft", job=FULL_JOB)),
    api.UpsertTrainingProjectV1(name="llama-sft"),
    api.UpsertTrainingProjectResponseV1(training_project=PROJECT),
    api.GetTrainingProjectResponseV1(training_project=PROJECT),
    api.ListTrainingProjectsResponseV1(training_projects=[PROJECT]),
    api.TrainingProjectV1(
        id="p", name="empty", created_at=NOW, updated_at=NOW, team_name="ml", latest_job=None
    ),
    api.TrainingProjectSummaryV1(id="proj-1", name="llama-sft"),
    api.TrainingProjectTombstoneV1(id="proj-1", deleted=True),
    INSTANCE,
    api.UserV1(email=None),
    JOB,
    api.CreateTrainingJobRequestV1(
        training_job=api.CreateTrainingJobV1.of(
            FULL_JOB,
            artifacts=[api.CreateTrainingJobS3Artifact(s3_bucket="b", s3_key="k")],
            truss_user_env=api.TrussUserEnv(truss_client_version="bt_jupyter 0.1.0"),
        )
    ),
    api.CreateTrainingJobV1.of(spec.TrainingJob(image=spec.Image(base_image="python:3.11"))),
    api.CreateTrainingJobRuntimeV1(start_commands=["echo hi"]),
    api.CreateTrainingJobS3Artifact(s3_bucket="b", s3_key="k"),
    api.TrussUserEnv(python_version="3.11.7", pydantic_version="2.11"),
    api.GitInfo(
        latest_commit_sha="abc",
        latest_tag=None,
        commits_since_tag=None,
        has_uncommitted_changes=True,
    ),
    api.CreateTrainingJobResponseV1(training_job=JOB),
    api.GetTrainingJobResponseV1(training_project=PROJECT, training_job=JOB),
    api.ListTrainingJobsResponseV1(training_project=PROJECT, training_jobs=[JOB]),
    api.SearchTrainingJobsRequestV1(project_id="proj-1", statuses=["TRAINING_JOB_RUNNING"]),
    api.OrderByV1(field="created_at", order="asc"),
    api.SearchTrainingJobsResponseV1(training_jobs=[JOB]),
    api.StopTrainingJobRequestV1(),
    api.StopTrainingJobResponseV1(training_job=JOB),
    api.RecreateTrainingJobResponseV1(training_job=JOB),
    api.UpdateTrainingJobRequestV1(priority=10),
    api.UpdateTrainingJobResponseV1(training_job=JOB),
    api.TrainingJobTombstoneV1(id="job-1", deleted=True, training_project_id="proj-1"),
    api.DownloadTrainingJobResponseV1(artifact_presigned_urls=["http://127.0.0.1/x.tar"]),
    api.GetTrainingJobLogsRequestV1(
        start_epoch_millis=1, end_epoch_millis=2, direction="asc", limit=1000, min_level="INFO"
    ),
    api.LogV1(timestamp="1764235800000000000", message="step 1", replica="0", level="INFO"),
    api.GetLogsResponseV1(logs=[api.LogV1(timestamp="1", message="m", replica=None)]),
    api.GetTrainingJobMetricsRequestV1(start_epoch_millis=1, step_seconds=15),
    METRIC,
    STORAGE,
    NODE_METRICS,
    api.TrainingJobNodeMetricsV1(node_id="0", metrics=NODE_METRICS),
    api.GetTrainingJobMetricsResponseV1(
        **NODE_METRICS.model_dump(),
        training_job=JOB,
        cache=None,
        per_node_metrics=[api.TrainingJobNodeMetricsV1(node_id="0", metrics=NODE_METRICS)],
    ),
    api.TrainingJobCheckpointV1(
        checkpoint_id="checkpoint-100",
        created_at=NOW,
        checkpoint_type="lora",
        base_model="org/model",
        lora_adapter_config={"r": 16},
        size_bytes=1024,
        sync_status="COMPLETED",
        training_job_id="job-1",
    ),
    api.GetTrainingJobCheckpointsResponseV1(training_job=JOB, checkpoints=[]),
    api.CheckpointFile(
        url="http://127.0.0.1/f",
        relative_file_name="rank-0/checkpoint-100/adapter_model.safetensors",
        node_rank=0,
        size_bytes=10,
        last_modified=NOW.isoformat(),
    ),
    api.GetTrainingJobCheckpointFilesResponseV1(
        presigned_urls=[], next_page_token=2, total_count=0
    ),
    api.FileSummary(
        path="hub/x", size_bytes=1, modified=NOW.isoformat(), file_type="file", permissions="0644"
    ),
    api.GetCacheSummaryResponseV1(timestamp=NOW.isoformat(), project_id="p", file_summaries=[]),
    api.AWSCredentialsV1(aws_access_key_id="a", aws_secret_access_key="s", aws_session_token="t"),
    api.GetAuthCodesResponseV1(
        auth_codes=[
            {
                "session_id": "s-1",
                "replica_id": "g00r0",
                "auth_code": "4F64-C0D9",
                "auth_url": "https://github.com/login/device",
            }
        ]
    ),
    TEAM_CAPACITY,
    api.AuthCodeV1(
        session_id="s-1",
        replica_id="g00r0",
        auth_code="4F64-C0D9",
        auth_url="https://github.com/login/device",
        expires_at=NOW.isoformat(),
        working_directory="/b10/workspace",
    ),
    SESSION,
    api.PatchInteractiveSessionRequestV1(timeout_minutes=60, trigger="on_demand"),
    api.PatchInteractiveSessionResponseV1(interactive_session=SESSION, message="extended"),
    api.SignSSHCertificateRequestV1(
        public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGkq baseten-training", replica_id="0"
    ),
    api.SignSSHCertificateResponseV1(
        ssh_certificate="ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQ",
        jwt="eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0cmFpbmluZy1qb2ItYWJjLTAifQ.c2ln",
        proxy_address="ssh.baseten.co:443",
        ssh_cert_expires_at=datetime(2026, 12, 1, 13, 0, tzinfo=timezone.utc),
    ),
    api.TrainingGpuCapacityItemV1(gpu_type="H100", baseline=8, limit=16, usage_count=8),
    api.GetTrainingGpuCapacityResponseV1(gpu_capacities=[], team_gpu_capacities=[TEAM_CAPACITY]),
    api.PatchTeamTrainingGpuCapacityRequestV1(team_id="t", gpu_type="H100", max_gpus=8),
    api.PatchTeamTrainingGpuCapacityResponseV1(team_gpu_capacity=TEAM_CAPACITY),
    CAPACITY_AT_SUBMIT,
    ACTIVE_AT_SUBMIT,
    PENDING_AHEAD,
    QUEUE_EVENT,
    api.GetTrainingJobQueueContextResponseV1(
        target_job_id="job-2",
        target_job_name="b",
        gpu_type="H100",
        requested_gpus=8,
        submitted_at=NOW.isoformat(),
        released_at=None,
        pending_seconds=None,
        org_capacity=CAPACITY_AT_SUBMIT,
        team_capacity=None,
        active_at_submit=[ACTIVE_AT_SUBMIT],
        pending_ahead_at_submit=[PENDING_AHEAD],
        events=[QUEUE_EVENT],
        events_window_end=NOW.isoformat(),
    ),
    api.GetBlobCredentialsResponseV1(
        creds=api.AWSCredentialsV1(
            aws_access_key_id="a", aws_secret_access_key="s", aws_session_token="t"
        ),
        s3_key="k",
        s3_bucket="b",
    ),
]


def _models() -> set[type[BaseModel]]:
    return {
        m
        for m in vars(api).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == api.__name__
    } - {api._Request, api._Response}


def test_every_api_model_has_an_example() -> None:
    missing = {m.__name__ for m in _models()} - {type(e).__name__ for e in EXAMPLES}
    missing = {m for m in missing if not m.startswith("Local")}  # our extensions, not Baseten's
    assert not missing, f"add an example for {sorted(missing)}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_example_validates_against_spec(example: BaseModel, openapi_spec: dict[str, Any]) -> None:
    OpenAPI(openapi_spec).validate(type(example).__name__, example.model_dump(mode="json"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: type(e).__name__)
def test_example_round_trips(example: BaseModel) -> None:
    dumped = example.model_dump(mode="json")
    assert type(example).model_validate(dumped).model_dump(mode="json") == dumped


def test_validator_catches_a_broken_body(openapi_spec: dict[str, Any]) -> None:
    """The check above could fail: a body missing required fields is reported."""
    errors = OpenAPI(openapi_spec).errors("TrainingJobV1", {"id": "x", "node_count": 0})
    assert any("created_at" in e for e in errors)
    assert any("node_count" in e for e in errors)


def test_request_models_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        api.UpdateTrainingJobRequestV1.model_validate({"priority": 1, "priorty": 2})


def test_log_limit_is_bounded_like_baseten() -> None:
    with pytest.raises(ValueError, match="1000"):
        api.GetTrainingJobLogsRequestV1(limit=1001)


def test_create_request_unwraps_to_the_concept() -> None:
    sent = api.CreateTrainingJobV1.of(
        FULL_JOB, artifacts=[api.CreateTrainingJobS3Artifact(s3_bucket="b", s3_key="k")]
    )
    assert sent.runtime.artifacts[0].s3_key == "k"
    assert sent.concept() == FULL_JOB
