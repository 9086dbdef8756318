"""This machine's GPUs as the local service sees them (capacity, a job's GPU metrics).
NVML cannot answer on a machine without an NVIDIA driver, so a stand-in of its calls
(the few the sampler makes, with NVML's own shapes) plays two H100s here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bt_jupyter.local import gpus


def test_nvml_without_a_driver_means_no_gpus() -> None:
    """This machine: nvidia-ml-py is installed, NVML finds no driver."""
    assert gpus.gpu_count() == 0
    assert gpus.gpu_types() == {}
    assert gpus.gpu_samples([0]) == {}


@pytest.fixture
def two_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        SimpleNamespace(name=b"NVIDIA H100 80GB HBM3", gpu=93, used=12 * 2**30),
        SimpleNamespace(name="NVIDIA H100 80GB HBM3", gpu=7, used=2**30),
    ]
    nvml = SimpleNamespace(
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: devices[i],
        nvmlDeviceGetName=lambda d: d.name,
        nvmlDeviceGetUtilizationRates=lambda d: SimpleNamespace(gpu=d.gpu, memory=0),
        nvmlDeviceGetMemoryInfo=lambda d: SimpleNamespace(used=d.used, total=80 * 2**30),
    )
    monkeypatch.setattr(gpus, "_nvml_module", nvml)
    monkeypatch.setattr(gpus, "_nvml_tried", True)


@pytest.mark.usefixtures("two_h100")
def test_nvml_counts_types_and_samples_each_gpu() -> None:
    assert gpus.gpu_count() == 2
    assert gpus.gpu_types() == {"H100": 2}
    assert gpus.gpu_samples([1]) == {"1": {"utilization": 0.07, "memory_bytes": float(2**30)}}
    assert gpus.gpu_samples([0])["0"]["utilization"] == pytest.approx(0.93)


@pytest.mark.parametrize(
    ("name", "gpu_type"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe 40GB", "H100_40GB"),
        ("NVIDIA A100-SXM4-40GB", "A100_40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla T4", "T4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA RTX PRO 6000 Blackwell", "RTX_PRO_6000"),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_gpu_names_map_to_baseten_types(name: str, gpu_type: str | None) -> None:
    assert gpus.gpu_type_of(name) == gpu_type
