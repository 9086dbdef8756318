"""Settings of the local service and its runners, read from the environment at start."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    #: Seconds between SIGTERM and SIGKILL when a job is stopped (Baseten-like default).
    stop_grace: float = 30.0
    #: Refuse (DEPLOY_FAILED) jobs that ask for GPUs this machine lacks, instead of CPU.
    require_gpu: bool = False
    #: Largest artifact (bundle) the service accepts.
    max_artifact_bytes: int = 5 * 1024**3

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            stop_grace=_float("BT_JUPYTER_STOP_GRACE_S", cls.stop_grace),
            require_gpu=os.environ.get("BT_JUPYTER_REQUIRE_GPU", "") not in ("", "0", "false"),
            max_artifact_bytes=int(_float("BT_JUPYTER_MAX_ARTIFACT_BYTES", cls.max_artifact_bytes)),
        )
