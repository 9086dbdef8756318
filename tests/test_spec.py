"""The concepts: defaults, parsing, and one-line errors that name the field and what is allowed."""

from __future__ import annotations

import itertools

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from bt_jupyter import spec
from bt_jupyter.errors import InvalidConfigError
from tests.adversarial.checks import assert_one_clear_line


def _job(**kw: object) -> spec.TrainingJob:
    return spec.TrainingJob(image=spec.Image(base_image="python:3.11"), **kw)


@pytest.mark.parametrize(
    ("text", "accelerator", "count"),
    [("H100:8", "H100", 8), ("H100", "H100", 1), ("a10g:2", "A10G", 2), (" L4:4 ", "L4", 4)],
)
def test_accelerator_strings(text: str, accelerator: str, count: int) -> None:
    compute = spec.Compute(accelerator=text)
    assert compute.accelerator == spec.AcceleratorSpec(accelerator=accelerator, count=count)
    assert compute.model_dump(mode="json")["accelerator"] == {
        "accelerator": accelerator,
        "count": count,
    }


def test_compute_describes_itself() -> None:
    assert spec.Compute(node_count=2, accelerator="H100:8").describe() == "2 x H100:8"
    assert spec.Compute().describe() == "1 x CPU"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: spec.Compute(accelerator="H101:8"),
            "Compute.accelerator.accelerator: unknown accelerator 'H101'; valid: T4, L4, A10G,",
        ),
        (
            lambda: spec.Compute(accelerator="H100:eight"),
            "Compute.accelerator: count in 'H100:eight'",
        ),
        (lambda: spec.Compute(accelerator="H100:0"), "GPU count must be >= 1, got 0"),
        (lambda: spec.Compute(node_count=0), "Compute.node_count: must be >= 1, got 0"),
        (lambda: spec.Compute(cpu_count=-2), "Compute.cpu_count: must be >= 1, got -2"),
        (lambda: spec.Compute(memory="2GB"), "Compute.memory: '2GB' is not a memory quantity"),
        (
            lambda: spec.Compute(availability_model="cheap"),
            "Compute.availability_model: Input should be 'dedicated' or 'spot', got 'cheap'",
        ),
        (
            lambda: spec.Compute(nodes=2),
            "Compute.nodes: unknown field; Compute accepts node_count, cpu_count, memory,",
        ),
        (
            lambda: spec.Runtime(environment_variables={"MY-VAR": "1"}),
            "Runtime.environment_variables: 'MY-VAR' is not a valid environment variable name",
        ),
        (
            lambda: spec.Runtime(environment_variables={"1ST": "1"}),
            "'1ST' is not a valid environment variable name; use letters, digits and underscores",
        ),
        (
            lambda: spec.Runtime(environment_variables={"PORT": 8080}),
            "value of PORT must be a str or SecretReference(name=...), got int",
        ),
        (
            lambda: spec.SecretReference(name=" "),
            "SecretReference.name: a secret name cannot be empty",
        ),
        (
            lambda: spec.Runtime(enable_cache=True, cache_config=spec.CacheConfig(enabled=True)),
            "set cache_config or the deprecated enable_cache, not both",
        ),
        (
            lambda: spec.CacheConfig(mount_base_path="cache"),
            "CacheConfig.mount_base_path: must be an absolute path, got 'cache'",
        ),
        (
            lambda: spec.CheckpointingConfig(enabled=True, volume_size_gib=0),
            "CheckpointingConfig.volume_size_gib: must be >= 1 GiB, got 0",
        ),
        (
            lambda: spec.DockerAuth(auth_method="AWS_IAM", registry="ecr"),
            "auth_method AWS_IAM needs aws_iam_docker_auth",
        ),
        (
            lambda: spec.DockerAuth(
                auth_method="AWS_OIDC",
                registry="ecr",
                aws_oidc_docker_auth={"role_arn": "r", "region": "x"},
                registry_secret_docker_auth={"secret_ref": {"name": "s"}},
            ),
            "registry_secret_docker_auth cannot be set when auth_method is AWS_OIDC",
        ),
        (lambda: spec.Image(base_image=""), "Image.base_image: String should have at least 1"),
        (
            lambda: _job(compute={"node_count": 0}),
            "TrainingJob.compute.node_count: must be >= 1, got 0",
        ),
        (
            lambda: _job(runtime={"load_checkpoint_config": {"checkpoints": [{"typ": "x"}]}}),
            "TrainingJob.runtime.load_checkpoint_config.checkpoints[0]: Input tag 'x'",
        ),
        (
            lambda: _job(
                runtime={
                    "load_checkpoint_config": {"checkpoints": [{"typ": "baseten_named_checkpoint"}]}
                }
            ),
            "checkpoints[0].checkpoint_name: required, but not given",
        ),
        (
            lambda: _job(weights=[{"source": "meta-llama/x", "mount_location": "/m"}]),
            "TrainingJob.weights[0].source: 'meta-llama/x' needs a scheme; use one of hf://",
        ),
        (
            lambda: spec.BasetenCheckpoint.from_latest_checkpoint(),
            "give project_name or job_id",
        ),
        (lambda: spec.TrainingJobStatus.parse("DONE"), "unknown job status 'DONE'; valid: PENDING"),
    ],
)
def test_invalid_configs_fail_with_one_precise_line(build: object, message: str) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        build()  # type: ignore[operator]
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    error = caught.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__, "no chained pydantic dump"


def test_every_accelerator_is_listed_when_one_is_wrong() -> None:
    with pytest.raises(InvalidConfigError) as caught:
        spec.Compute(accelerator="TPU")
    for name in spec.ACCELERATORS:
        assert name in str(caught.value)


def test_assignment_is_validated_too() -> None:
    job = _job()
    with pytest.raises(InvalidConfigError, match=r"Compute.node_count: must be >= 1, got 0"):
        job.compute.node_count = 0
    assert job.compute.node_count == 1


def test_a_notebook_shows_only_the_one_line() -> None:
    """In IPython the error renders as one line: no traceback, no pydantic dump."""
    shell = InteractiveShell.instance()
    with capture_output() as captured:
        shell.run_cell("from bt_jupyter import Compute\nCompute(accelerator='H101:8')")
    lines = [line for line in captured.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, captured.stdout
    assert lines[0].startswith("InvalidConfigError: Compute.accelerator.accelerator: unknown")
    assert "Traceback" not in captured.stdout + captured.stderr


def test_legacy_hf_cache_alias() -> None:
    by_doc_name = spec.CacheConfig(enable_legacy_hf_cache=True)
    by_wire_name = spec.CacheConfig(enable_legacy_hf_mount=True)
    assert by_doc_name == by_wire_name
    assert by_doc_name.enable_legacy_hf_cache
    assert by_doc_name.enable_legacy_hf_mount
    assert by_doc_name.model_dump(mode="json")["enable_legacy_hf_mount"] is True


def test_deprecated_enable_cache_migrates_like_truss() -> None:
    runtime = spec.Runtime(enable_cache=True)
    assert runtime.enable_cache is None
    assert runtime.cache_config == spec.CacheConfig(enabled=True, enable_legacy_hf_mount=True)


def test_secret_references_in_env() -> None:
    runtime = spec.Runtime(
        environment_variables={"HF_TOKEN": {"name": "hf"}, "W": spec.SecretReference(name="w")}
    )
    secrets = runtime.environment_variables
    assert all(isinstance(secrets[k], spec.SecretReference) for k in ("HF_TOKEN", "W"))
    assert [secrets[k].name for k in ("HF_TOKEN", "W")] == ["hf", "w"]  # type: ignore[union-attr]
    assert runtime.model_dump(mode="json")["environment_variables"]["HF_TOKEN"] == {"name": "hf"}


def test_defaults_match_baseten() -> None:
    job = _job()
    assert job.compute.model_dump(mode="json") == {
        "node_count": 1,
        "cpu_count": 1,
        "memory": "2Gi",
        "accelerator": None,
        "availability_model": "dedicated",
    }
    assert job.runtime.checkpointing_config == spec.CheckpointingConfig(enabled=False)
    assert spec.LoadCheckpointConfig().checkpoints == [spec.LatestCheckpoint()]
    assert spec.LoadCheckpointConfig().download_folder == "/tmp/loaded_checkpoints"
    assert spec.CacheConfig().mount_base_path == "/root/.cache"
    assert job.enable_baseten_workdir is True


def test_project_wire_leaves_out_the_job() -> None:
    project = spec.TrainingProject(name="p", job=_job())
    assert project.to_wire() == {"name": "p"}
    assert spec.as_training_project(project) is project
    with pytest.raises(InvalidConfigError, match="expected a TrainingProject"):
        spec.as_training_project({"name": "p"})


def test_json_round_trip() -> None:
    job = _job(
        compute=spec.Compute(node_count=2, accelerator="H100:8"),
        runtime=spec.Runtime(
            load_checkpoint_config=spec.LoadCheckpointConfig(
                enabled=True, checkpoints=[spec.NamedCheckpoint(checkpoint_name="c", job_id="j")]
            )
        ),
    )
    assert spec.TrainingJob.model_validate_json(job.model_dump_json()) == job


S = spec.TrainingJobStatus


def test_status_lifecycle() -> None:
    happy = [S.PENDING, S.CREATED, S.DEPLOYING, S.RUNNING, S.COMPLETED]
    for before, after in itertools.pairwise(happy):
        assert before.can_become(after)
        assert not after.can_become(before)
    assert {s for s in S if s.is_terminal} == {S.COMPLETED, S.FAILED, S.STOPPED, S.DEPLOY_FAILED}
    for terminal in (S.COMPLETED, S.FAILED, S.STOPPED, S.DEPLOY_FAILED):
        assert not any(terminal.can_become(other) for other in S)
    for live in (S.PENDING, S.CREATED, S.DEPLOYING, S.RUNNING):
        assert live.can_become(S.STOPPED)
    assert S.DEPLOYING.can_become(S.DEPLOY_FAILED)
    assert not S.RUNNING.can_become(S.DEPLOY_FAILED)
    assert S.parse("running") is S.RUNNING
    assert S.parse("TRAINING_JOB_DEPLOY_FAILED") is S.DEPLOY_FAILED
    assert S.DEPLOY_FAILED.short == "DEPLOY_FAILED"
    assert S.FAILED.is_failure
    assert not S.STOPPED.is_failure


@pytest.mark.parametrize(
    ("mounts", "mentions"),
    [
        (["models/base"], ("absolute",)),
        (["/models/../etc"], ("not a plain path", "'/etc'")),
        (["/models//base"], ("not a plain path", "'/models/base'")),
        (["/"], ("system files",)),
        (["/usr/local/models"], ("system files",)),
        (["/proc/x"], ("system files",)),
        (["/models/base", "/models/base"], ("is also",)),
        (["/models", "/models/base"], ("overlaps",)),
        (["/data/a", "/data"], ("overlaps",)),
        (["/models/a\x00b"], ("mount_location",)),
    ],
)
def test_weights_mount_locations_are_plain_apart_and_off_system_folders(
    mounts: list[str], mentions: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidConfigError) as refused:
        spec.TrainingJob(
            image=spec.Image(base_image="python:3.11"),
            weights=[
                spec.WeightsSource(source=f"hf://org/m{i}", mount_location=m)
                for i, m in enumerate(mounts)
            ],
        )
    assert_one_clear_line(str(refused.value), *mentions)


def test_weights_mounts_side_by_side_are_fine() -> None:
    job = spec.TrainingJob(
        image=spec.Image(base_image="python:3.11"),
        weights=[
            spec.WeightsSource(source="hf://org/model", mount_location="/models/base"),
            spec.WeightsSource(source="s3://bucket/data", mount_location="/models/base-data/"),
        ],
    )
    assert [w.mount_location for w in job.weights] == ["/models/base", "/models/base-data/"]
