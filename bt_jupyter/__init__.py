"""bt_jupyter: train models on Baseten from a notebook cell.

The concepts live in :mod:`bt_jupyter.spec` (wire-compatible with ``truss_train``); the
REST shapes in :mod:`bt_jupyter.api`. See DESIGN.md for how the pieces fit.
"""

from bt_jupyter._version import __version__
from bt_jupyter.errors import BtJupyterError, InvalidConfigError
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

__all__ = [
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
