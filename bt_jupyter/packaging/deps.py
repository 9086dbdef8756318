"""Pinned requirements for every import a job runs, and the base image that can run it.

Top-level modules map to the distributions that provide them (``yaml`` -> PyYAML,
``sklearn`` -> scikit-learn), pinned to the versions installed here without local labels
(``2.13.0+cpu`` -> ``2.13.0``, so a CPU notebook still gets CUDA torch on a GPU node).
The standard library and local code (which travels as source) need nothing; the
runtime needs cloudpickle. Requirements given with ``--pip`` or ``--requirements`` are
merged in; two different pins of one distribution are reported, never silently
resolved. A module the job imports that nothing here can provide is an error before
anything is sent.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bt_jupyter.errors import (
    DependencyError,
)
from bt_jupyter.images import TORCH_IMAGES, image_python, torch_image
from bt_jupyter.packaging import files
from bt_jupyter.packaging.imports import ImportedModule

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: What the job's runtime itself imports besides the standard library.
RUNTIME_DISTRIBUTIONS = ("cloudpickle",)
#: The only part of bt_jupyter a job can import (it travels in the bundle).
IN_JOB_MODULES = frozenset(
    {"bt_jupyter", "bt_jupyter.runtime", "bt_jupyter.session_kernel", "bt_jupyter.trackers"}
)
#: Distributions a library imports only when a feature is used, which its users have
#: installed alongside it: ``transformers.Trainer`` needs accelerate, a Llama tokenizer
#: sentencepiece. Pinned with the library when they are installed here, or the job fails
#: where the notebook worked.
#: Distributions pinned to the notebook's version even when the job reaches them only
#: through a pinned library (peft, accelerate -> torch): left unpinned, pip takes the
#: newest, and the job trains with another torch than the notebook.
FOLLOWED_DEPENDENCIES = ("torch",)
COMPANIONS: dict[str, tuple[str, ...]] = {
    "transformers": ("accelerate", "sentencepiece"),
    "trl": ("peft",),
}


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def _is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def distributions_for(module: str) -> list[str]:
    """The installed distributions that provide ``module`` (a dotted name).

    A namespace package (``google``) is shared by many distributions: the ones whose
    files hold the imported sub-package are kept.
    """
    parts = module.split(".")
    candidates = sorted(set(_distributions().get(parts[0], [])))
    if len(candidates) <= 1 or len(parts) == 1:
        return candidates
    prefix = "/".join(parts[:2])
    holding = [
        dist
        for dist in candidates
        if any(str(f).startswith((f"{prefix}/", f"{prefix}.")) for f in metadata.files(dist) or [])
    ]
    return holding or candidates


def pin(dist: str) -> str | None:
    """``dist==version`` for an installed distribution, without a local label."""
    try:
        version = Version(metadata.version(dist)).public
    except (metadata.PackageNotFoundError, InvalidVersion):
        return None
    return f"{metadata.metadata(dist)['Name'] or dist}=={version}"


def pin_bare(line: str) -> str:
    """``torch`` as ``torch==<this notebook's version>`` when installed here; anything
    else as written. A session has no cell to detect its imports from: its ``--pip`` names
    get the notebook's versions, as detection would give a cell."""
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return line
    if req.specifier or req.url or req.marker:
        return line
    pinned = pin(req.name)
    if pinned is None:
        return line
    name, _, version = pinned.partition("==")
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{name}{extras}=={version}"


def requirements_for(
    imported: Iterable[ImportedModule], local: Iterable[str], explicit: Iterable[str] = ()
) -> list[str]:
    """Pins for the modules a job imports, plus the runtime's own; clear errors otherwise.

    ``local`` are top-level modules that travel as source; ``explicit`` the user's own
    requirements (``--pip``/``--requirements``), which may provide a module not
    installed here.
    """
    local_names = {*local, "__main__"}
    unverifiable = [r for r in explicit if not _installed(r)]
    by_top: dict[str, ImportedModule] = {}
    for module in imported:  # one entry per top-level module; a required import wins
        seen = by_top.get(module.top)
        if seen is None or (seen.optional and not module.optional):
            by_top[module.top] = module
    pins: dict[str, str] = {}
    for top, module in sorted(by_top.items()):
        if _is_stdlib(top) or top in local_names:
            continue
        if top == "bt_jupyter":
            if module.name not in IN_JOB_MODULES and not module.optional:
                raise DependencyError(
                    f"{module.where}: `{module.name}` is not available inside a job; only "
                    "bt_jupyter.runtime (log_metrics, checkpoint_dir) travels with it"
                )
            continue
        dists = distributions_for(module.name)
        for dist in dists:
            for name in (dist, *COMPANIONS.get(canonicalize_name(dist), ())):
                if (line := pin(name)) is not None:
                    pins[canonicalize_name(name)] = line
        if dists or module.optional or unverifiable:
            continue
        found = files.module_origin(top)
        if found is not None:
            raise DependencyError(
                f"{module.where}: `{top}` is installed here ({found}) but belongs to no "
                "pip distribution, so the job cannot install it; put its source next to "
                "the notebook, or add it with --include"
            )
        raise DependencyError(
            f"{module.where}: `{top}` is not installed here and is not local code; "
            f"install it in this notebook's environment, or name the distribution that "
            f"provides it with --pip (e.g. --pip {top.replace('_', '-')})"
        )
    for dist in RUNTIME_DISTRIBUTIONS:
        if (line := pin(dist)) is not None:
            pins.setdefault(canonicalize_name(dist), line)
    for name in FOLLOWED_DEPENDENCIES:
        needed = name not in pins and any(_depends_on(d, name) for d in pins)
        if needed and (line := pin(name)) is not None:
            pins[name] = line
    return [pins[k] for k in sorted(pins)]


def _depends_on(dist: str, name: str) -> bool:
    """Whether installed ``dist`` requires ``name`` (not only through an extra)."""
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return False
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == name and "extra" not in str(req.marker or ""):
            return True
    return False


def _installed(line: str) -> bool:
    try:
        metadata.version(Requirement(line).name)
    except (InvalidRequirement, metadata.PackageNotFoundError):
        return False
    return True


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
            pinned = pinned_version(first)
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


def pinned_version(req: Requirement) -> str | None:
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


def _torch(requirements: Iterable[str]) -> Requirement | None:
    for line in requirements:
        req = Requirement(line)
        if canonicalize_name(req.name) == "torch":
            return req
    return None


def default_base_image(requirements: list[str]) -> str:
    """The official PyTorch image for the pinned torch when it runs this Python, else
    python:X.Y-slim (where the job's start commands install torch from PyPI)."""
    torch = _torch(requirements)
    version = pinned_version(torch) if torch else None
    if version:
        image = TORCH_IMAGES.get(".".join(version.split(".")[:2]))
        if image is not None and image.torch == version and image.python == PYTHON:
            return image.name
    return f"python:{PYTHON}-slim"


def check_image(
    image: str, requirements: list[str], gpu: bool = False, declared_python: str | None = None
) -> list[str]:
    """Refuse an image that cannot run the job; return the requirements fitted to it.

    The image's Python must be the notebook's (pickled notebook code is bytecode of one
    Python): known images are checked, any other needs its Python declared
    (``--image-python``). On an official PyTorch image torch is the image's own, never
    reinstalled. A GPU job needs a torch that can use CUDA.
    """
    python = image_python(image) or declared_python
    if python is None:
        raise DependencyError(
            f"cannot tell which Python base image {image} runs, and the cell's state "
            f"travels as Python {PYTHON} bytecode; if it runs Python {PYTHON}, say so with "
            f"--image-python {PYTHON}, or use python:{PYTHON}-slim or an official "
            "pytorch/pytorch image"
        )
    if python != PYTHON:
        raise DependencyError(
            f"base image {image} runs Python {python}, but the cell's state was captured with "
            f"Python {PYTHON} and cannot be unpickled there; use an image with Python {PYTHON} "
            f"(e.g. python:{PYTHON}-slim)"
        )
    torch = _torch(requirements)
    shipped = torch_image(image)
    if (
        shipped is not None
        and torch is not None
        and not torch.specifier.contains(shipped.torch, prereleases=True)
    ):
        if pinned_version(torch) is None:
            raise DependencyError(
                f"base image {image} ships torch {shipped.torch}, but the job asks for "
                f"{torch}; choose the image of that torch or drop the requirement"
            )
        # the notebook's pin: the image's torch replaces it (a chosen image wins)
        requirements = [
            f"torch=={shipped.torch}" if _torch([r]) is not None else r for r in requirements
        ]
    if gpu and torch is not None and (torch_local := _local_label(torch)):
        raise DependencyError(
            f"the job asks for a GPU but its torch requirement `{torch}` is a {torch_local} "
            "build; drop the local label (e.g. torch=="
            f"{(pinned_version(torch) or '').split('+')[0]}) to get CUDA torch on the node"
        )
    return requirements


def _local_label(req: Requirement) -> str | None:
    version = pinned_version(req)
    return version.split("+", 1)[1] if version and "+" in version else None
