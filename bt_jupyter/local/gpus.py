"""The GPUs of this machine, through NVML (``nvidia-ml-py``: the driver's own library,
no process per sample), else ``nvidia-smi``; none when neither answers (no NVIDIA
driver: GPU metrics are then absent, not zero)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from typing import Any


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


_nvml_module: Any = None
_nvml_tried = False


def _nvml() -> Any:
    """``pynvml``, initialised once per process; None without an NVIDIA driver."""
    global _nvml_module, _nvml_tried
    if not _nvml_tried:
        _nvml_tried = True
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_module = pynvml
        except Exception:  # no library, no driver, no device: NVML is not here
            _nvml_module = None
    return _nvml_module


def _names() -> list[str]:
    """The name of each GPU, by index."""
    nvml = _nvml()
    if nvml is not None:
        try:
            return [
                _text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))
                for i in range(nvml.nvmlDeviceGetCount())
            ]
        except Exception:
            pass
    lines = [line for line in _query("-L") if line.startswith("GPU ")]
    return [line.split(":", 1)[-1].split("(UUID")[0].strip() for line in lines]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_count() -> int:
    return len(_names())


#: Baseten's GPU type of an ``nvidia-smi -L`` name, most specific first.
_TYPES = (
    (r"\bGB300\b", "GB300"),
    (r"\bB300\b", "B300"),
    (r"\bB200\b", "B200"),
    (r"\bH200\b", "H200"),
    (r"\bH100\b.*\b40GB\b", "H100_40GB"),
    (r"\bH100\b", "H100"),
    (r"\bA100\b.*\b40GB\b", "A100_40GB"),
    (r"\bA100\b", "A100"),
    (r"\bL40S\b", "L40S"),
    (r"\bA10G\b", "A10G"),
    (r"\bV100\b", "V100"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
    (r"RTX PRO 6000", "RTX_PRO_6000"),
)


def gpu_type_of(name: str) -> str | None:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"H100"``; None for a GPU Baseten does not offer."""
    for pattern, gpu_type in _TYPES:
        if re.search(pattern, name):
            return gpu_type
    return None


def gpu_types() -> dict[str, int]:
    """This machine's GPUs by Baseten GPU type (empty without ``nvidia-smi``)."""
    found = Counter(filter(None, (gpu_type_of(name) for name in _names())))
    return dict(found)


def gpu_samples(indices: list[int]) -> dict[str, dict[str, float]]:
    """``{"0": {"utilization": 0.93, "memory_bytes": 1.2e10}, ...}`` for the given GPUs."""
    nvml = _nvml()
    if nvml is not None:
        try:
            return {str(i): _nvml_sample(nvml, i) for i in indices}
        except Exception:
            pass  # a GPU that went away mid-job: ask nvidia-smi, or report none
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


def _nvml_sample(nvml: Any, index: int) -> dict[str, float]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return {
        "utilization": nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
        "memory_bytes": float(nvml.nvmlDeviceGetMemoryInfo(handle).used),
    }
