"""Base images bt_jupyter knows: the Python each runs and the packages it ships.

Packaging needs it to choose an image and check that the image's Python can load the
cell's state; the local service needs it to stand in for the image faithfully (its
Python, its packages, nothing else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TorchImage:
    """An official ``pytorch/pytorch`` runtime image: its torch, CUDA and Python."""

    torch: str
    cuda: str
    python: str

    @property
    def name(self) -> str:
        return f"pytorch/pytorch:{self.torch}-cuda{self.cuda}-cudnn9-runtime"


#: Official pytorch/pytorch runtime images, by torch minor: the newest patch, its CUDA
#: and its Python. Releases not listed here (or whose Python differs from the notebook's)
#: run on python:X.Y-slim, where the job installs PyPI's torch, a CUDA build on Linux.
TORCH_IMAGES = {
    "2.4": TorchImage("2.4.1", "12.4", "3.11"),
    "2.5": TorchImage("2.5.1", "12.4", "3.11"),
    "2.6": TorchImage("2.6.0", "12.6", "3.11"),
    "2.7": TorchImage("2.7.1", "12.8", "3.11"),
    "2.8": TorchImage("2.8.0", "12.8", "3.12"),
    "2.9": TorchImage("2.9.1", "12.8", "3.12"),
}
_PYTHON_IMAGES = frozenset(
    {"python", "library/python", "docker.io/python", "docker.io/library/python"}
)
_TORCH_TAG = re.compile(r"^(\d+\.\d+)(?:\.(\d+))?-cuda([\d.]+)-cudnn\d+-(runtime|devel)$")


def _split(image: str) -> tuple[str, str]:
    last = image.split("/")[-1]
    if ":" not in last:
        return image, "latest"
    name, _, tag = image.rpartition(":")
    return name, tag


def torch_image(image: str) -> TorchImage | None:
    """The official PyTorch image ``image`` names, if it is one this table knows."""
    name, tag = _split(image)
    if not name.endswith("pytorch/pytorch"):
        return None
    match = _TORCH_TAG.match(tag)
    known = TORCH_IMAGES.get(match.group(1)) if match else None
    if match is None or known is None:
        return None
    return TorchImage(f"{match.group(1)}.{match.group(2) or 0}", match.group(3), known.python)


def image_python(image: str) -> str | None:
    """The Python major.minor a known image runs, or None when it cannot be told."""
    name, tag = _split(image)
    if name in _PYTHON_IMAGES:
        match = re.match(r"(\d+\.\d+)", tag)
        return match.group(1) if match else None
    found = torch_image(image)
    return found.python if found else None


def shipped_packages(image: str) -> tuple[str, ...]:
    """Pins of the packages a known image ships besides Python and pip."""
    found = torch_image(image)
    return (f"torch=={found.torch}",) if found else ()
