"""Baseten's model side, outside the training spec: what deploying a checkpoint touches.

The GraphQL types Baseten's CLI reads (teams, instance types, the model version a deploy
creates) and the model API's deployment (``/v1/models/{model_id}/deployments/{id}``).
A deployed checkpoint is served at ``model-{model_id}.api.baseten.co``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TeamV1(_Response):
    """One of ``query { teams { id name default } }``."""

    id: str
    name: str
    default: bool = False


class ListedInstanceV1(_Response):
    """One of ``listed_instances``, with the camelCase aliases Baseten's CLI asks for."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    name: str
    millicpu_limit: int = Field(alias="millicpuLimit")
    memory_limit: int = Field(alias="memoryLimit")
    gpu_count: int = Field(alias="gpuCount")
    gpu_type: str | None = Field(alias="gpuType")
    gpu_memory: int | None = Field(default=None, alias="gpuMemory")
    default: bool = False
    display_name: str = Field(alias="displayName")
    node_count: int = Field(default=1, alias="nodeCount")
    price: float | None = None
    limited_capacity: bool | None = Field(default=None, alias="limitedCapacity")


class ModelVersionV1(_Response):
    id: str
    name: str
    model_id: str


class CreateModelVersionResultV1(_Response):
    """``create_model_version_from_inference_template``: no version on a dry run."""

    model_version: ModelVersionV1 | None = None
    truss_config: str | None = None


class ModelDeploymentV1(_Response):
    """``GET /v1/models/{model_id}/deployments/{deployment_id}``."""

    id: str
    created_at: datetime
    name: str
    model_id: str
    is_production: bool = False
    is_development: bool = False
    status: str
    active_replica_count: int = 0
    environment: str | None = None
