"""bt_jupyter: train models on Baseten from a notebook cell.

The concepts live in :mod:`bt_jupyter.spec` (wire-compatible with ``truss_train``); the
REST shapes in :mod:`bt_jupyter.api`. See DESIGN.md for how the pieces fit.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from bt_jupyter._version import __version__

if TYPE_CHECKING:
    from bt_jupyter.checkpoints import Checkpoint, load_hf
    from bt_jupyter.deployments import Deployment
    from bt_jupyter.errors import BtJupyterError, InvalidConfigError, JobFailed
    from bt_jupyter.jobs import Client, Job
    from bt_jupyter.spec import (
        AcceleratorSpec,
        BasetenCheckpoint,
        CacheConfig,
        CheckpointingConfig,
        Compute,
        DockerAuth,
        Image,
        LoadCheckpointConfig,
        Runtime,
        SecretReference,
        TrainingJob,
        TrainingJobStatus,
        TrainingProject,
    )

#: Where each public name lives. ``import bt_jupyter`` loads none of them (the client
#: brings httpx and pydantic): a name's module is imported when the name is first used.
_EXPORTS = {
    "Checkpoint": "checkpoints",
    "load_hf": "checkpoints",
    "Deployment": "deployments",
    "BtJupyterError": "errors",
    "InvalidConfigError": "errors",
    "JobFailed": "errors",
    "Client": "jobs",
    "Job": "jobs",
    **dict.fromkeys(
        [
            "AcceleratorSpec",
            "BasetenCheckpoint",
            "CacheConfig",
            "CheckpointingConfig",
            "Compute",
            "DockerAuth",
            "Image",
            "LoadCheckpointConfig",
            "Runtime",
            "SecretReference",
            "TrainingJob",
            "TrainingJobStatus",
            "TrainingProject",
        ],
        "spec",
    ),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bt_jupyter' has no attribute {name!r}")
    value = getattr(import_module(f"bt_jupyter.{module}"), name)
    globals()[name] = value  # the next use is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext bt_jupyter``: register %%bt_train and the %bt_* magics."""
    from bt_jupyter import widgets
    from bt_jupyter.magics import BtMagics

    ipython.register_magics(BtMagics)
    widgets.register(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension (``bt_jupyter.server``): named here, imported only by
    the server, so a kernel importing ``bt_jupyter`` never loads tornado/jupyter_server."""
    return [{"module": "bt_jupyter.server"}]


__all__ = [
    "Checkpoint",
    "Client",
    "load_hf",
    "Deployment",
    "Job",
    "JobFailed",
    "load_ipython_extension",
    "AcceleratorSpec",
    "BasetenCheckpoint",
    "BtJupyterError",
    "CacheConfig",
    "CheckpointingConfig",
    "Compute",
    "DockerAuth",
    "Image",
    "InvalidConfigError",
    "LoadCheckpointConfig",
    "Runtime",
    "SecretReference",
    "TrainingJob",
    "TrainingJobStatus",
    "TrainingProject",
    "__version__",
]
