"""The GPUs of this machine, read with ``nvidia-smi`` (none when it is absent)."""

from __future__ import annotations

import shutil
import subprocess


def _query(*args: str) -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_count() -> int:
    return len([line for line in _query("-L") if line.startswith("GPU ")])


def gpu_samples(indices: list[int]) -> dict[str, dict[str, float]]:
    """``{"0": {"utilization": 0.93, "memory_bytes": 1.2e10}, ...}`` for the given GPUs."""
    wanted = {str(i) for i in indices}
    samples: dict[str, dict[str, float]] = {}
    query = "--query-gpu=index,utilization.gpu,memory.used"
    for line in _query(query, "--format=csv,noheader,nounits"):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0] in wanted:
            try:
                samples[parts[0]] = {
                    "utilization": float(parts[1]) / 100.0,
                    "memory_bytes": float(parts[2]) * 1024 * 1024,
                }
            except ValueError:
                continue
    return samples
