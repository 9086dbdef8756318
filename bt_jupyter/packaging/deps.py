"""Pinned requirements for what a cell imports, and the base image that can run it.

Top-level modules map to the distributions that provide them, pinned to the versions
installed here, so the job runs with the notebook's versions. The standard library,
local code (which travels as source) and bt_jupyter's runtime (which travels in the
bundle) need nothing. Requirements given with ``--pip`` or ``--requirements`` are merged
in; two different pins of one distribution are reported, never silently resolved.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bt_jupyter.errors import BtJupyterError

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: Python in the official pytorch/pytorch images, by torch minor version.
_PYTORCH_IMAGE_PYTHON = {"2.4": "3.11", "2.5": "3.11", "2.6": "3.11", "2.7": "3.11", "2.8": "3.12"}
_CUDA_FOR_TORCH = {"2.4": "12.4", "2.5": "12.4", "2.6": "12.6", "2.7": "12.8", "2.8": "12.8"}


class DependencyError(BtJupyterError):
    """Requirements that conflict or cannot be read."""


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def pins_for(modules: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """``dist==version`` for each third-party top-level module (stdlib and ``skip`` excluded)."""
    skipped = {*skip, "bt_jupyter", "__main__"}
    pins: dict[str, str] = {}
    for module in sorted(set(modules) - skipped):
        if module in sys.stdlib_module_names or module in sys.builtin_module_names:
            continue
        for dist in _distributions().get(module, []):
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            pins[canonicalize_name(dist)] = f"{dist}=={Version(version).public}"
    return [pins[k] for k in sorted(pins)]


def merge(*sources: tuple[str, Iterable[str]]) -> list[str]:
    """Merge (origin, requirement lines) in order; conflicting pins raise one error.

    An explicit requirement (``--pip``, ``--requirements``) replaces a detected pin of the
    same distribution when it admits the installed version; otherwise it is a conflict.
    """
    chosen: dict[str, tuple[str, Requirement]] = {}
    for origin, lines in sources:
        for line in lines:
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                raise DependencyError(f"{origin}: {line!r} is not a requirement: {exc}") from None
            key = canonicalize_name(req.name)
            if key not in chosen:
                chosen[key] = (origin, req)
                continue
            first_origin, first = chosen[key]
            if str(first.specifier) == str(req.specifier):
                continue
            pinned = _pinned(first)
            if (
                origin != "detected"
                and first_origin == "detected"
                and (pinned is None or req.specifier.contains(pinned, prereleases=True))
            ):
                chosen[key] = (origin, req)
                continue
            raise DependencyError(
                f"conflicting requirements for {req.name}: {first} ({first_origin}) and "
                f"{req} ({origin}); keep one of them"
            )
    return [str(req) for _, req in sorted(chosen.values(), key=lambda c: c[1].name.lower())]


def _pinned(req: Requirement) -> str | None:
    specs = list(req.specifier)
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def read_requirements_file(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DependencyError(f"cannot read requirements file {path}: {exc.strerror}") from None
    return [
        line.split(" #", 1)[0].strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("#", "-"))
    ]


def default_base_image(requirements: list[str]) -> str:
    """The official PyTorch image for the torch in use (its CUDA), else python:X.Y-slim."""
    torch = next(
        (r for r in requirements if canonicalize_name(Requirement(r).name) == "torch"), None
    )
    version = _pinned(Requirement(torch)) if torch else None
    if version:
        minor = ".".join(version.split(".")[:2])
        cuda = _local_cuda() or _CUDA_FOR_TORCH.get(minor)
        if cuda and _PYTORCH_IMAGE_PYTHON.get(minor) == PYTHON:
            return f"pytorch/pytorch:{version}-cuda{cuda}-cudnn9-runtime"
    return f"python:{PYTHON}-slim"


def _local_cuda() -> str | None:
    module = sys.modules.get("torch")
    return getattr(getattr(module, "version", None), "cuda", None) if module else None


def image_python(image: str) -> str | None:
    """The Python major.minor a known image runs, or None when it cannot be told."""
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    if name.endswith("python") or name == "python":
        match = re.match(r"(\d+\.\d+)", tag)
        return match.group(1) if match else None
    if name.endswith("pytorch/pytorch"):
        match = re.match(r"(\d+\.\d+)", tag)
        return _PYTORCH_IMAGE_PYTHON.get(match.group(1)) if match else None
    return None


def check_image(image: str) -> None:
    """Refuse an image whose Python cannot unpickle what this Python captured."""
    python = image_python(image)
    if python is not None and python != PYTHON:
        raise DependencyError(
            f"base image {image} runs Python {python}, but the cell's state was captured with "
            f"Python {PYTHON} and cannot be unpickled there; use an image with Python {PYTHON} "
            f"(e.g. python:{PYTHON}-slim)"
        )
