"""Our concepts produce exactly the request bodies Baseten's own truss_train SDK produces.

Each configuration is written once against a module-like namespace ``m`` and built twice:
with ``truss_train`` (the reference) and with ``bt_jupyter.spec``. The project-upsert and
job-create bodies must be equal as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from bt_jupyter import api, spec

truss_train = pytest.importorskip("truss_train", reason="truss is a test-only dependency")
from truss.base import truss_config  # noqa: E402
from truss.remote.baseten import custom_types as b10_types  # noqa: E402
from truss_train import definitions as truss_defs  # noqa: E402
from truss_train.deployment import PreparedTrainingJob, S3Artifact  # noqa: E402

TRUSS = SimpleNamespace(
    **vars(truss_train),
    InteractiveSession=truss_defs.InteractiveSession,
    InteractiveSessionTrigger=truss_defs.InteractiveSessionTrigger,
    DockerAuthType=truss_config.DockerAuthType,
)
OURS = spec
ARTIFACT = {"s3_bucket": "bt-training-artifacts", "s3_key": "proj/bundle-3f2a.tar.gz"}
USER_ENV = {
    "truss_client_version": "0.18.36",
    "python_version": "3.11.7",
    "pydantic_version": "2.11.0",
    "mypy_version": None,
    "git_info": None,
}

Build = Callable[[Any], Any]


def _job(m: Any, **kw: Any) -> Any:
    kw.setdefault("image", m.Image(base_image="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"))
    return m.TrainingJob(**kw)


CONFIGS: dict[str, Build] = {
    "single-node-cpu": lambda m: m.TrainingProject(
        name="quickstart", job=_job(m, runtime=m.Runtime(start_commands=["python train.py"]))
    ),
    "single-node-gpu": lambda m: m.TrainingProject(
        name="sft",
        job=_job(
            m,
            name="sft-h100",
            compute=m.Compute(accelerator="H100:8", cpu_count=32, memory="512Gi"),
            runtime=m.Runtime(start_commands=["pip install -r requirements.txt", "bash run.sh"]),
        ),
    ),
    "single-gpu-default-count": lambda m: m.TrainingProject(
        name="lora", job=_job(m, compute=m.Compute(accelerator="A10G"))
    ),
    "multi-node": lambda m: m.TrainingProject(
        name="pretrain",
        job=_job(
            m,
            compute=m.Compute(node_count=4, accelerator="H200:8"),
            runtime=m.Runtime(start_commands=["torchrun --nnodes=$BT_GROUP_SIZE train.py"]),
        ),
    ),
    "secrets-in-env": lambda m: m.TrainingProject(
        name="secrets",
        job=_job(
            m,
            runtime=m.Runtime(
                environment_variables={
                    "HF_TOKEN": m.SecretReference(name="hf_access_token"),
                    "WANDB_API_KEY": m.SecretReference(name="wandb_api_key"),
                    "LR": "2e-5",
                }
            ),
        ),
    ),
    "cache-on": lambda m: m.TrainingProject(
        name="cached",
        job=_job(
            m,
            runtime=m.Runtime(
                cache_config=m.CacheConfig(
                    enabled=True, require_cache_affinity=False, mount_base_path="/workspace/.cache"
                )
            ),
        ),
    ),
    "legacy-hf-mount": lambda m: m.TrainingProject(
        name="hf",
        job=_job(
            m,
            runtime=m.Runtime(
                cache_config=m.CacheConfig(enabled=True, enable_legacy_hf_mount=True)
            ),
        ),
    ),
    "deprecated-enable-cache": lambda m: m.TrainingProject(
        name="old-cache", job=_job(m, runtime=m.Runtime(enable_cache=True))
    ),
    "checkpointing-path-and-volume": lambda m: m.TrainingProject(
        name="ckpt",
        job=_job(
            m,
            runtime=m.Runtime(
                checkpointing_config=m.CheckpointingConfig(
                    enabled=True, checkpoint_path="/mnt/ckpts", volume_size_gib=500
                )
            ),
        ),
    ),
    "load-latest-checkpoint": lambda m: m.TrainingProject(
        name="resume",
        job=_job(
            m,
            runtime=m.Runtime(
                checkpointing_config=m.CheckpointingConfig(enabled=True),
                load_checkpoint_config=m.LoadCheckpointConfig(
                    enabled=True,
                    checkpoints=[m.BasetenCheckpoint.from_latest_checkpoint(project_name="sft")],
                ),
            ),
        ),
    ),
    "load-latest-of-job-custom-folder": lambda m: m.TrainingProject(
        name="resume-job",
        job=_job(
            m,
            runtime=m.Runtime(
                load_checkpoint_config=m.LoadCheckpointConfig(
                    enabled=True,
                    download_folder="/data/ckpts",
                    checkpoints=[m.BasetenCheckpoint.from_latest_checkpoint(job_id="abc123")],
                )
            ),
        ),
    ),
    "load-named-checkpoint": lambda m: m.TrainingProject(
        name="resume-named",
        job=_job(
            m,
            runtime=m.Runtime(
                load_checkpoint_config=m.LoadCheckpointConfig(
                    enabled=True,
                    checkpoints=[
                        m.BasetenCheckpoint.from_named_checkpoint("checkpoint-500", "abc123"),
                        m.BasetenCheckpoint.from_named_checkpoint("checkpoint-900", "abc123"),
                    ],
                )
            ),
        ),
    ),
    "load-default-checkpoint-list": lambda m: m.TrainingProject(
        name="resume-default",
        job=_job(m, runtime=m.Runtime(load_checkpoint_config=m.LoadCheckpointConfig(enabled=True))),
    ),
    "loops-checkpoint": lambda m: m.TrainingProject(
        name="loops",
        job=_job(
            m,
            runtime=m.Runtime(
                load_checkpoint_config=m.LoadCheckpointConfig(
                    enabled=True,
                    checkpoints=[m.LoopsCheckpoint.from_checkpoint("run-1", "step-10", "sampler")],
                )
            ),
        ),
    ),
    "spot": lambda m: m.TrainingProject(
        name="cheap",
        job=_job(
            m, compute=m.Compute(accelerator="H100:2", availability_model=m.AvailabilityModel.SPOT)
        ),
    ),
    "docker-auth-aws-iam": lambda m: m.TrainingProject(
        name="ecr",
        job=_job(
            m,
            image=m.Image(
                base_image="123.dkr.ecr.us-east-1.amazonaws.com/train:1",
                docker_auth=m.DockerAuth(
                    auth_method=m.DockerAuthType.AWS_IAM,
                    registry="123.dkr.ecr.us-east-1.amazonaws.com",
                    aws_iam_docker_auth=m.AWSIAMDockerAuth(
                        access_key_secret_ref=m.SecretReference(name="aws_key"),
                        secret_access_key_secret_ref=m.SecretReference(name="aws_secret"),
                    ),
                ),
            ),
        ),
    ),
    "docker-auth-gcp-json": lambda m: m.TrainingProject(
        name="gar",
        job=_job(
            m,
            image=m.Image(
                base_image="us-docker.pkg.dev/p/r/train:1",
                docker_auth=m.DockerAuth(
                    auth_method=m.DockerAuthType.GCP_SERVICE_ACCOUNT_JSON,
                    registry="us-docker.pkg.dev",
                    gcp_service_account_json_docker_auth=m.GCPServiceAccountJSONDockerAuth(
                        service_account_json_secret_ref=m.SecretReference(name="gcp_sa")
                    ),
                ),
            ),
        ),
    ),
    "docker-auth-registry-secret": lambda m: m.TrainingProject(
        name="ghcr",
        job=_job(
            m,
            image=m.Image(
                base_image="ghcr.io/org/train:1",
                docker_auth=m.DockerAuth(
                    auth_method=m.DockerAuthType.REGISTRY_SECRET,
                    registry="ghcr.io",
                    registry_secret_docker_auth=m.RegistrySecretDockerAuth(
                        secret_ref=m.SecretReference(name="ghcr_creds")
                    ),
                ),
            ),
        ),
    ),
    "docker-auth-aws-oidc": lambda m: m.TrainingProject(
        name="oidc",
        job=_job(
            m,
            image=m.Image(
                base_image="123.dkr.ecr.us-west-2.amazonaws.com/train:2",
                docker_auth=m.DockerAuth(
                    auth_method=m.DockerAuthType.AWS_OIDC,
                    registry="123.dkr.ecr.us-west-2.amazonaws.com",
                    aws_oidc_docker_auth=m.AWSOIDCDockerAuth(
                        role_arn="arn:aws:iam::123:role/pull", region="us-west-2"
                    ),
                ),
            ),
        ),
    ),
    "team-priority-interactive-workspace-weights": lambda m: m.TrainingProject(
        name="team-run",
        team_name="research",
        job=_job(
            m,
            name="debuggable",
            priority=10,
            interactive_session=m.InteractiveSession(
                trigger=m.InteractiveSessionTrigger.ON_FAILURE, timeout_minutes=60
            ),
            workspace=m.Workspace(exclude_dirs=["data"], external_dirs=["../shared_lib"]),
            weights=[
                m.WeightsSource(
                    source="hf://meta-llama/Llama-3.1-8B@main",
                    mount_location="/app/models/base",
                    auth_secret_name="hf_access_token",
                    allow_patterns=["*.safetensors", "config.json"],
                )
            ],
            enable_baseten_workdir=False,
        ),
    ),
    "everything": lambda m: m.TrainingProject(
        name="full",
        job=_job(
            m,
            name="full-run",
            compute=m.Compute(node_count=2, cpu_count=8, memory="64Gi", accelerator="H100:8"),
            runtime=m.Runtime(
                start_commands=["python -m bt_jupyter.runtime"],
                environment_variables={"HF_TOKEN": m.SecretReference(name="hf"), "SEED": "1"},
                cache_config=m.CacheConfig(enabled=True, enable_legacy_hf_mount=True),
                checkpointing_config=m.CheckpointingConfig(enabled=True, volume_size_gib=200),
                load_checkpoint_config=m.LoadCheckpointConfig(
                    enabled=True,
                    checkpoints=[m.BasetenCheckpoint.from_latest_checkpoint(project_name="full")],
                ),
            ),
        ),
    ),
}


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def truss_bodies(project: Any) -> tuple[Any, Any]:
    """What truss's BasetenApi posts: the project upsert, then the job create."""
    job = project.job
    prepared = PreparedTrainingJob(
        **{name: getattr(job, name) for name in type(job).model_fields},
        runtime_artifacts=[S3Artifact(**ARTIFACT)],
        truss_user_env=b10_types.TrussUserEnv(**USER_ENV),
    )
    upsert = {"training_project": project.model_dump(exclude_none=True)}
    create = {"training_job": prepared.model_dump()}
    return _json(upsert), _json(create)


def our_bodies(project: spec.TrainingProject) -> tuple[Any, Any]:
    upsert = api.UpsertTrainingProjectRequestV1.of(project)
    create = api.CreateTrainingJobRequestV1(
        training_job=api.CreateTrainingJobV1.of(
            project.job,
            artifacts=[api.CreateTrainingJobS3Artifact(**ARTIFACT)],
            truss_user_env=api.TrussUserEnv(**USER_ENV),
        )
    )
    return (
        upsert.model_dump(mode="json", exclude_none=True),
        create.model_dump(mode="json"),
    )


def test_at_least_a_dozen_configurations() -> None:
    assert len(CONFIGS) >= 12


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_request_bodies_equal_truss_train(name: str) -> None:
    build = CONFIGS[name]
    theirs = truss_bodies(build(TRUSS))
    ours = our_bodies(build(OURS))
    assert ours[0] == theirs[0], "project upsert body differs"
    assert ours[1] == theirs[1], "job create body differs"
    # and byte for byte, key order included, the way the request goes over the wire
    assert json.dumps(ours[1]) == json.dumps(theirs[1])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_truss_train_objects_are_accepted(name: str) -> None:
    """Wherever we take a TrainingProject, a truss_train.TrainingProject works too."""
    converted = spec.as_training_project(CONFIGS[name](TRUSS))
    assert converted == CONFIGS[name](OURS)


def test_legacy_hf_cache_alias_serializes_under_the_wire_name() -> None:
    ours = spec.CacheConfig(enabled=True, enable_legacy_hf_cache=True)
    theirs = truss_train.CacheConfig(enabled=True, enable_legacy_hf_mount=True)
    assert ours.model_dump(mode="json") == _json(theirs.model_dump())
    assert "enable_legacy_hf_cache" not in json.dumps(ours.model_dump(mode="json"))
    assert ours.enable_legacy_hf_cache is True


def test_truss_objects_nest_inside_ours() -> None:
    job = spec.TrainingJob(
        image=truss_train.Image(base_image="python:3.11"),
        compute=truss_train.Compute(accelerator="L4:1"),
        runtime=spec.Runtime(environment_variables={"T": truss_train.SecretReference(name="t")}),
    )
    assert job.compute.accelerator == spec.AcceleratorSpec(accelerator="L4", count=1)
    assert job.runtime.environment_variables["T"] == spec.SecretReference(name="t")


PUSH_FLAGS: list[dict[str, Any]] = [
    {"entrypoint": "python train.py --epochs 3"},
    {"entrypoint": "torchrun train.py", "priority": 5, "accelerator": "H200:8", "node_count": 2},
    {"priority": -3, "spot": True},
    {},
]


@pytest.mark.parametrize("flags", PUSH_FLAGS, ids=lambda f: ",".join(f) or "none")
@pytest.mark.parametrize("name", ["everything", "single-node-gpu", "multi-node"])
def test_push_flags_change_the_job_as_truss_train_push_does(
    name: str, flags: dict[str, Any]
) -> None:
    """``Client.push(..., entrypoint=..., priority=...)`` sends what ``truss train push
    --entrypoint ... --priority ...`` sends (truss's own override code is the reference),
    and says what each flag replaced, as truss warns."""
    from truss_train.deployment import _apply_cli_overrides

    theirs = CONFIGS[name](TRUSS)
    _apply_cli_overrides(theirs, **flags)
    ours, notes = spec.with_push_options(CONFIGS[name](OURS), **flags)
    sent, reference = our_bodies(ours)[1], truss_bodies(theirs)[1]
    if "entrypoint" in flags:
        # truss assigns the start commands, which revalidates its Runtime and drops the
        # deprecated ``enable_cache`` key (null) from the body: the same request to Baseten
        assert sent["training_job"]["runtime"].pop("enable_cache") is None
        assert "enable_cache" not in reference["training_job"]["runtime"]
    assert json.dumps(sent) == json.dumps(reference)
    original = CONFIGS[name](OURS).job
    if "entrypoint" in flags and original.runtime.start_commands:
        assert any("start_commands" in note for note in notes)
    if not flags:
        assert notes == []
