"""The local stand-in for a job's image: the image's Python and what it ships, nothing else.

A job on Baseten sees only its image and what its start commands install. Locally each
node gets the same, as three layers of virtualenvs (none sees this machine's
site-packages, the service's or the notebook's):

- **image**: the image's Python (``python:3.12-slim`` -> a Python 3.12 here) with pip
  and the packages the image ships (``pytorch/pytorch:2.5.1-…`` -> torch 2.5.1, a CPU
  build where there is no GPU). Built once per image, shared by every job.
- **requirements**: what ``python -m bt_jupyter.install`` puts on top of the image for a
  given ``requirements.txt``, built once per (image, requirements) by running that same
  install, so a warm job's install step finds everything satisfied.
- **node**: an empty virtualenv per node that sees the two layers below it. What a job's
  own start commands install lands here and is gone with the job: a cached layer never
  changes after it is built.

Layers live in a machine-wide cache (``$BT_JUPYTER_IMAGE_CACHE``, default
``~/.cache/bt_jupyter``): they depend only on the image and the requirements, never on a
job or a service, and each is built under a lock so concurrent jobs build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bt_jupyter.images import image_python, shipped_packages
from bt_jupyter.local import package_store
from bt_jupyter.local.package_store import remove_tree

Log = Callable[[str], None]
#: Bump when a layer's layout changes, so old layers are not reused.
LAYOUT = "1"
#: Start commands that install ``requirements.txt``: bt_jupyter's own (packaged cells) and
#: the usual one of a truss train project. A job with one gets a requirements layer.
_INSTALLS = re.compile(
    r"^\s*(python3? -m bt_jupyter\.install"
    r"|(python3? -m )?(uv )?pip3? install( -\S+)* (-r|--requirement) requirements\.txt)\s*$"
)


def installs_requirements(commands: list[str]) -> bool:
    """Whether a job's start commands install its ``requirements.txt``."""
    return any(_INSTALLS.match(line) for c in commands for line in c.split("&&"))


#: What a Debian-based image puts on PATH.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EnvBuildError(Exception):
    """The image's stand-in could not be prepared (the job is DEPLOY_FAILED)."""


def default_cache() -> Path:
    configured = os.environ.get("BT_JUPYTER_IMAGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "bt_jupyter"


@dataclass(frozen=True)
class Layer:
    """One built virtualenv: its root and the site-packages folder the next layer sees."""

    root: Path
    site: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"


@dataclass(frozen=True)
class StandIn:
    """What the local service runs for an image: a Python version and shipped packages."""

    image: str
    python: str
    ships: tuple[str, ...]
    known: bool

    @classmethod
    def of(cls, image: str) -> StandIn:
        python = image_python(image)
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        return cls(image, python or here, shipped_packages(image), python is not None)

    @property
    def key(self) -> str:
        text = json.dumps([LAYOUT, self.python, sorted(self.ships)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        ships = f" with {', '.join(self.ships)}" if self.ships else ""
        if not self.known:
            return (
                f"Image {self.image}: not one bt_jupyter knows; standing in with a bare "
                f"Python {self.python}{ships} (on Baseten it is the image's own)"
            )
        return f"Image {self.image}: standing in with Python {self.python}{ships}, nothing else"


def find_python(version: str) -> str | None:
    """An interpreter of this machine for ``version`` (major.minor), or None."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    if version == here and base and Path(base).exists():
        return str(base)
    candidates = [shutil.which(f"python{version}")]
    candidates += [f"{d}/python{version}" for d in ("/usr/local/bin", "/usr/bin")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        candidates += [
            str(p / "bin" / f"python{version}")
            for p in sorted(pyenv.iterdir(), reverse=True)
            if re.match(rf"{re.escape(version)}\.\d+$", p.name)
        ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def image_layer(stand_in: StandIn, cache: Path, log: Log) -> Layer:
    """The image's layer (Python, pip, shipped packages), built on first use."""
    root = cache / "images" / stand_in.key
    layer = Layer(root, _site(root, stand_in.python))
    with package_store.locked(root):
        # bin/python links to this machine's interpreter: rebuilt when that one is gone
        if (root / ".ready").exists() and (root / "bin" / "python").exists():
            return layer
        python = find_python(stand_in.python)
        if python is None:
            raise EnvBuildError(
                f"image {stand_in.image} runs Python {stand_in.python}, which this machine "
                f"does not have; install python{stand_in.python} here, or run the job on "
                "Baseten"
            )
        log(f"Image {stand_in.image}: building its local stand-in (Python {stand_in.python})")
        started = time.monotonic()
        remove_tree(root)
        _run([python, "-m", "venv", str(root)], log)
        if stand_in.ships:
            shipped = root / "shipped.txt"
            shipped.write_text("".join(f"{name}\n" for name in stand_in.ships))
            _install(layer, shipped, cache, log)
        (root / ".ready").write_text(stand_in.image + "\n")
        _read_only(root)
        log(f"Image {stand_in.image}: stand-in ready in {time.monotonic() - started:.1f}s")
    return layer


def requirements_layer(
    image: Layer, stand_in: StandIn, requirements: str, cache: Path, log: Log
) -> Layer | None:
    """The layer that holds ``requirements`` over ``image``, built on first use.

    None when the install fails: the job's own install command then meets the same
    failure on its node, and the job fails with it, as it would on Baseten.
    """
    key = hashlib.sha256(f"{stand_in.key}\n{requirements}".encode()).hexdigest()[:16]
    root = cache / "layers" / key
    layer = Layer(root, _site(root, stand_in.python))
    with package_store.locked(root):
        if (root / ".ready").exists() and (root / "bin" / "python").exists():
            log(f"Requirements: cached layer {key} (built once for this image and list)")
            return layer
        remove_tree(root)
        _venv(image, root, [image])
        lines = [line for line in requirements.splitlines() if line.strip()]
        named = ", ".join(lines[:6]) + (f" and {len(lines) - 6} more" if len(lines) > 6 else "")
        log(f"Requirements: building layer {key} for {len(lines)} requirement(s): {named}")
        started = time.monotonic()
        listed = root / "requirements.txt"
        listed.write_text(requirements)
        try:
            _install(layer, listed, cache, log)
        except EnvBuildError as exc:
            log(f"Requirements: the install failed ({exc}); the job's own install will say why")
            remove_tree(root)
            return None
        (root / ".ready").write_text(requirements)
        _read_only(root)
        log(f"Requirements: layer {key} ready in {time.monotonic() - started:.1f}s")
    return layer


def node_env(target: Path, image: Layer, layers: list[Layer]) -> Layer:
    """A fresh, empty virtualenv for one node that sees ``layers`` (top first)."""
    shutil.rmtree(target, ignore_errors=True)
    _venv(image, target, layers)
    pip = target / "bin" / "pip"  # `pip install` in a start command installs into the node
    pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    pip.chmod(0o755)
    for alias in ("pip3", f"pip{_version_of(image)}"):
        (target / "bin" / alias).symlink_to("pip")
    return Layer(target, _site(target, _version_of(image)))


def _version_of(layer: Layer) -> str:
    return layer.site.parent.name.removeprefix("python")


def _venv(image: Layer, root: Path, below: list[Layer]) -> None:
    """A virtualenv of the image's Python that sees the site-packages of ``below``.

    Written directly in PEP 405's layout (``pyvenv.cfg`` naming the base interpreter,
    ``bin/python`` linking to it, an empty site-packages) from the image layer's own
    ``pyvenv.cfg``: a few files in about a millisecond, where ``python -m venv`` costs
    a Python start-up on every node of every job.
    """
    config = (image.root / "pyvenv.cfg").read_text()
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition("=") for line in config.splitlines())
        if value
    }
    version = _version_of(image)
    base = Path(fields.get("home", "")) / f"python{version}"
    if not base.exists():
        raise EnvBuildError(f"the image stand-in's Python {base} is gone; remove {image.root}")
    site = _site(root, version)
    site.mkdir(parents=True)
    (root / "bin").mkdir()
    for name in ("python", "python3", f"python{version}"):
        (root / "bin" / name).symlink_to(base)
    (root / "pyvenv.cfg").write_text(
        f"home = {fields['home']}\ninclude-system-site-packages = false\n"
        f"version = {fields.get('version', version)}\n"
    )
    adds = "".join(f"; site.addsitedir({str(layer.site)!r})" for layer in below)
    # addsitedir (not a plain path line) so the layers' own .pth files are processed too
    (site / "_bt_layers.pth").write_text(f"import site{adds}\n")


def _site(root: Path, version: str) -> Path:
    return root / "lib" / f"python{version}" / "site-packages"


def _install(layer: Layer, requirements: Path, cache: Path, log: Log) -> None:
    """Install ``requirements`` into ``layer``: from the machine's package store when
    every package pip chooses is a wheel (a package another layer has is linked, not
    reinstalled), else with pip itself."""
    python = layer.bin / "python"
    env = _pip_env(layer)
    if not package_store.link_layer(python, layer.site, layer.bin, requirements, cache, log, env):
        _pip(layer, ["-r", str(requirements)], log)


def _read_only(root: Path) -> None:
    """A built layer is never changed: jobs install into their node's own env."""
    for folder, _, names in os.walk(root):
        for path in (Path(folder), *(Path(folder) / name for name in names)):
            if not path.is_symlink():  # bin/python links to this machine's interpreter
                path.chmod(path.stat().st_mode & ~0o222)


def _pip_env(layer: Layer) -> dict[str, str]:
    """pip's environment in a layer: this machine's way to its package index, nothing else."""
    env = {
        "PATH": f"{layer.bin}{os.pathsep}{IMAGE_PATH}",
        "HOME": os.environ.get("HOME", "/"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
        "PIP_PROGRESS_BAR": "off",
        "PIP_NO_INPUT": "1",
    }
    for name in ("PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        if name in os.environ:  # how this machine reaches its package index
            env[name] = os.environ[name]
    return env


def _pip(layer: Layer, args: list[str], log: Log) -> None:
    _run([str(layer.bin / "python"), "-m", "pip", "install", *args], log, _pip_env(layer))


def _run(cmd: list[str], log: Log, env: dict[str, str] | None = None) -> None:
    tail: list[str] = []
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                log(line)
                tail = [*tail[-2:], line]
    if proc.returncode != 0:
        detail = " | ".join(tail) if tail else "no output"
        raise EnvBuildError(f"`{' '.join(cmd[:5])} ...` failed ({proc.returncode}): {detail}")
