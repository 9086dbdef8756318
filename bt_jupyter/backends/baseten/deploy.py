"""Deploy a training checkpoint on Baseten the way ``truss train deploy_checkpoints`` does.

One GraphQL mutation, ``create_model_version_from_inference_template``, with a
``B10_CHECKPOINTING`` weights source (the job and checkpoint), the ``VLLM`` inference
stack and an instance type picked from the GPU asked for. Everything that can be checked
before that call is: the checkpoint exists, a LoRA adapter has a base model and a rank
vLLM serves, the GPU exists as a single-node instance type, the model name is valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bt_jupyter import api, serving_api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import (
    DeployError,
)

#: The ranks vLLM's ``--max-lora-rank`` accepts, as ``truss_train`` lists them.
ALLOWED_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
#: What Baseten's CLI assumes when an adapter config does not say.
DEFAULT_LORA_RANK = 16
MODEL_NAME = re.compile(r"^[0-9a-zA-Z_\-.]+$")
HF_TOKEN = "HF_TOKEN"

INSTANCES_QUERY = """
query Instances {
    listedInstances: listed_instances {
        id
        name
        millicpuLimit: millicpu_limit
        memoryLimit: memory_limit
        gpuCount: gpu_count
        gpuType: gpu_type
        gpuMemory: gpu_memory
        default
        displayName: display_name
        nodeCount: node_count
        price
        limitedCapacity: limited_capacity
    }
}
"""

DEPLOY_MUTATION = """
mutation ($request: CreateModelVersionFromInferenceTemplateRequest!) {
    create_model_version_from_inference_template(request: $request) {
        model_version {
            id
            name
            model_id
        }
        truss_config
    }
}
"""


@dataclass(frozen=True)
class DeployPlan:
    """What will be deployed, and the mutation's request body."""

    checkpoint: api.TrainingJobCheckpointV1
    model_name: str
    instance: serving_api.ListedInstanceV1
    lora_rank: int | None
    request: dict[str, Any]


def instance_types(rest: ApiClient) -> list[serving_api.ListedInstanceV1]:
    rows = rest.graphql(INSTANCES_QUERY)["listedInstances"]
    return [serving_api.ListedInstanceV1.model_validate(row) for row in rows]


def choose_instance(
    instances: list[serving_api.ListedInstanceV1], gpu: spec.AcceleratorSpec
) -> serving_api.ListedInstanceV1:
    """The single-node instance type with that GPU and the fewest of them, at least
    ``gpu.count`` (the rule of Baseten's CLI)."""
    fitting = [
        i
        for i in instances
        if i.node_count == 1 and i.gpu_type == gpu.accelerator and i.gpu_count >= gpu.count
    ]
    if not fitting:
        offered = sorted(
            {f"{i.gpu_type}:{i.gpu_count}" for i in instances if i.gpu_count and i.node_count == 1}
        )
        raise DeployError(
            f"no single-node instance type has {gpu}; instance types with GPUs: "
            f"{', '.join(offered) or 'none'}"
        )
    return min(fitting, key=lambda i: (i.gpu_count, i.millicpu_limit))


def pick_checkpoint(
    checkpoints: list[api.TrainingJobCheckpointV1], job_id: str, name: str
) -> api.TrainingJobCheckpointV1:
    if not checkpoints:
        raise DeployError(f"job {job_id} has no checkpoints to deploy")
    if name == "latest":  # the newest model checkpoint (the --out folder is not listed)
        return max(reversed(checkpoints), key=lambda c: c.created_at)
    for checkpoint in checkpoints:
        if checkpoint.checkpoint_id == name:
            return checkpoint
    names = ", ".join(c.checkpoint_id for c in checkpoints)
    raise DeployError(f"job {job_id} has no checkpoint {name!r}; it has {names}")


def lora_rank(checkpoint: api.TrainingJobCheckpointV1) -> int:
    """``r`` of the adapter config, which vLLM must be started to accept."""
    rank = (checkpoint.lora_adapter_config or {}).get("r") or DEFAULT_LORA_RANK
    if rank not in ALLOWED_LORA_RANKS:
        allowed = ", ".join(map(str, ALLOWED_LORA_RANKS))
        raise DeployError(
            f"checkpoint {checkpoint.checkpoint_id} is a LoRA adapter of rank {rank}, which "
            f"vLLM cannot serve; train with r in {allowed}"
        )
    return int(rank)


def _default_name(checkpoint: api.TrainingJobCheckpointV1, job_label: str) -> str:
    if checkpoint.checkpoint_type == "lora" and checkpoint.base_model:
        raw = checkpoint.base_model.split("/")[-1]
    else:
        raw = f"{job_label}-{checkpoint.checkpoint_id}"
    return re.sub(r"[^0-9a-zA-Z_\-.]+", "-", raw).strip("-") or "model"


def plan(
    rest: ApiClient,
    job: api.TrainingJobV1,
    checkpoint: str = "latest",
    name: str | None = None,
    gpu: str | spec.AcceleratorSpec | None = None,
    hf_secret: str | None = None,
    env: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> DeployPlan:
    """Check everything and build the request ``truss train deploy_checkpoints`` sends."""
    chosen = pick_checkpoint(rest.checkpoints(job.training_project_id, job.id), job.id, checkpoint)
    kind = chosen.checkpoint_type.lower()
    rank = None
    if kind == "lora":
        if not chosen.base_model:
            raise DeployError(
                f"checkpoint {chosen.checkpoint_id} is a LoRA adapter with no base model "
                "recorded; save it with its adapter_config.json (base_model_name_or_path)"
            )
        base = chosen.base_model
        if base.startswith(("/", "./", "../", "~")) or base.count("/") > 1:
            raise DeployError(
                f"checkpoint {chosen.checkpoint_id} is a LoRA adapter on {chosen.base_model!r}, "
                "a path on the job's node; Baseten's vLLM loads the base from the Hugging Face "
                "hub: train it on a hub model id (e.g. Qwen/Qwen2.5-0.5B)"
            )
        rank = lora_rank(chosen)
    elif kind not in ("full", "whisper"):
        raise DeployError(
            f"checkpoint {chosen.checkpoint_id} is of type {chosen.checkpoint_type!r}; vLLM "
            "deploys LoRA adapters and full Hugging Face checkpoints"
        )
    model_name = name or _default_name(chosen, job.name or job.id)
    if not MODEL_NAME.match(model_name):
        raise DeployError(
            f"model name {model_name!r} may only use letters, digits, '-', '_' and '.'"
        )
    accelerator = _gpu(job, gpu)
    instance = choose_instance(instance_types(rest), accelerator)
    variables = [
        {"name": key, "value": str(value), "is_secret_reference": False}
        for key, value in (env or {}).items()
    ]
    if hf_secret:
        variables.append({"name": HF_TOKEN, "value": hf_secret, "is_secret_reference": True})
    request = {
        "metadata": {"oracle_name": model_name},
        "weights_sources": [
            {
                "weight_source_type": "B10_CHECKPOINTING",
                "b10_training_checkpoint_weights_source": {
                    "checkpoint": {
                        "training_job_id": job.id,
                        "checkpoint_name": chosen.checkpoint_id,
                    }
                },
            }
        ],
        "inference_stack": {"stack_type": "VLLM", "environment_variables": variables},
        "instance_type_id": instance.id,
        "dry_run": dry_run,
    }
    return DeployPlan(chosen, model_name, instance, rank, request)


def _gpu(job: api.TrainingJobV1, gpu: str | spec.AcceleratorSpec | None) -> spec.AcceleratorSpec:
    """The GPU asked for, else the one each node of the job trained on."""
    if gpu is not None:
        try:
            return spec.AcceleratorSpec.model_validate(gpu)
        except ValidationError as exc:
            raise spec.invalid_config(spec.AcceleratorSpec, exc) from None
    trained = job.instance_type
    if not trained.gpu_type or trained.gpu_count < 1:
        raise DeployError(
            f"job {job.id} trained on CPU and vLLM needs a GPU: pass gpu='H100:1' (or another)"
        )
    return spec.AcceleratorSpec(accelerator=trained.gpu_type, count=trained.gpu_count)


def create(rest: ApiClient, request: dict[str, Any]) -> serving_api.CreateModelVersionResultV1:
    answer = rest.graphql(DEPLOY_MUTATION, {"request": request}, mutation=True)
    return serving_api.CreateModelVersionResultV1.model_validate(
        answer["create_model_version_from_inference_template"]
    )
