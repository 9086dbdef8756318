"""Packages installed once per machine, shared by every requirements layer that needs them.

A requirements layer used to run ``pip install -r requirements.txt`` from scratch: a
second set that shared torch with the first reinstalled (and recopied) all of it. Now:

1. **pip resolves** (``pip install --dry-run --report``) in the layer, over the image:
   the same resolver, index and configuration as the job's own install, so the layer
   holds exactly what pip would put there.
2. **Each wheel is installed once** into the store (``<cache>/store/<python>/<name>-
   <version>-<sha256>``) by uv: unpacked from its cache, hash-checked, its bytecode
   compiled for the image's Python, then made read-only.
3. **The layer links** every file of its wheels from the store (hard links: no copy, no
   disk), scripts copied with the layer's interpreter on their ``#!`` line.

Anything this cannot do the same way (a source distribution, a local folder, a VCS URL, no
uv) is left to pip, as before: :func:`link_layer` returns False.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

Log = Callable[[str], None]
#: Bump when a store entry's layout changes, so old entries are not reused.
STORE_LAYOUT = "1"
#: ``0``: pip installs every layer itself (as before the store).
STORE_ENV = "BT_JUPYTER_PACKAGE_STORE"
_READ_ONLY = ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


@dataclass(frozen=True)
class Wheel:
    """One distribution pip chose: where it comes from and its digest."""

    name: str
    version: str
    url: str
    sha256: str

    @property
    def key(self) -> str:
        """The store entry's name: the same file gives the same entry on every layer."""
        name = re.sub(r"[^A-Za-z0-9.]+", "_", self.name).lower()
        version = re.sub(r"[^A-Za-z0-9.]+", "_", self.version)
        return f"{name}-{version}-{self.sha256[:16]}"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """An exclusive lock on ``<root>.lock`` while ``root`` is checked or built."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f"{root.name}.lock").open("w") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def remove_tree(path: Path) -> None:
    """Remove a layer or a store entry, read-only as they are."""

    def writable_then_retry(func: Callable[[str], object], name: str, _: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            func(name)

    if not (path.exists() or path.is_symlink()):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=writable_then_retry)
    else:
        shutil.rmtree(path, onerror=writable_then_retry)


def uv_binary() -> str | None:
    """uv, a dependency of bt_jupyter (its wheel holds the binary), or one on PATH."""
    try:
        from uv import find_uv_bin
    except ImportError:
        return shutil.which("uv")
    try:
        return str(find_uv_bin())
    except FileNotFoundError:
        return shutil.which("uv")


def resolve(python: Path, requirements: Path, env: dict[str, str]) -> list[Wheel] | None:
    """What pip would install for ``requirements`` with ``python`` (everything it already
    sees counts as installed); None when pip cannot say, or chose something that is not
    a hash-checked wheel file (pip then installs the layer itself)."""
    with tempfile.TemporaryDirectory(prefix="bt-resolve-") as folder:
        report = Path(folder) / "report.json"
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report",
             str(report), "-r", str(requirements)],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not report.exists():
            return None
        items = json.loads(report.read_text()).get("install", [])
    wheels = []
    for item in items:
        info = item.get("download_info") or {}
        url = str(info.get("url", ""))
        sha256 = ((info.get("archive_info") or {}).get("hashes") or {}).get("sha256")
        if not sha256 or not url.split("#")[0].endswith(".whl") or item.get("is_direct"):
            return None
        meta = item["metadata"]
        wheels.append(Wheel(str(meta["name"]), str(meta["version"]), url, str(sha256)))
    return wheels


def link_layer(
    python: Path, site: Path, bin_dir: Path, requirements: Path, cache: Path, log: Log,
    env: dict[str, str],
) -> bool:  # fmt: skip
    """Fill the layer (``site``, ``bin_dir``) with what pip resolves for ``requirements``,
    every wheel from the store. False when pip must install it instead (nothing in the
    layer was changed)."""
    uv = uv_binary()
    if uv is None or os.environ.get(STORE_ENV) == "0":
        return False
    wheels = resolve(python, requirements, env)
    if wheels is None:
        return False
    version = site.parent.name.removeprefix("python")
    store = cache / "store" / f"{STORE_LAYOUT}-py{version}"
    missing = [w for w in wheels if not (store / w.key / ".ready").exists()]
    log(
        f"Requirements: {len(wheels)} package(s) resolved, "
        f"{len(wheels) - len(missing)} already on this machine, {len(missing)} to install"
    )
    for index, wheel in enumerate(missing, 1):
        log(f"Requirements: installing {wheel.name} {wheel.version} ({index}/{len(missing)})")
        if not _store(uv, python, wheel, store / wheel.key, cache, env, log):
            return False
    started = time.monotonic()
    files = sum(_link(store / w.key, site, bin_dir, python) for w in wheels)
    # what this layer links: `bt-jupyter local cache prune` keeps those store entries
    (bin_dir.parent / ".store").write_text("".join(f"{w.key}\n" for w in wheels))
    log(f"Requirements: linked {files} files of {len(wheels)} package(s) from the store "
        f"in {time.monotonic() - started:.1f}s")  # fmt: skip
    return True


def _store(
    uv: str, python: Path, wheel: Wheel, entry: Path, cache: Path, env: dict[str, str], log: Log
) -> bool:
    """Install one wheel into its store entry (under its lock: one build per machine)."""
    with locked(entry):
        if (entry / ".ready").exists():
            return True
        remove_tree(entry)
        building = entry.with_name(f"{entry.name}.building")
        remove_tree(building)
        listed = building.with_name(f"{entry.name}.txt")
        listed.write_text(f"{wheel.name} @ {wheel.url} --hash=sha256:{wheel.sha256}\n")
        uv_env = {
            **env,
            "UV_CACHE_DIR": str(cache / "uv"),
            "UV_LINK_MODE": "hardlink",  # the store shares uv's unpacked files
            "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NATIVE_TLS": "1",  # the machine's certificates, as pip's
        }
        done = subprocess.run(
            [uv, "pip", "install", "--quiet", "--no-deps", "--require-hashes",
             "--compile-bytecode", "--python", str(python), "--target", str(building),
             "-r", str(listed)],
            env=uv_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )  # fmt: skip
        listed.unlink()
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            log(f"Requirements: uv could not install {wheel.name} ({last}); pip installs the layer")
            remove_tree(building)
            return False
        (building / ".ready").write_text(f"{wheel.name}=={wheel.version}\n{wheel.url}\n")
        building.rename(entry)
        for path in (entry, *entry.rglob("*")):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & _READ_ONLY)
    return True


def _link(entry: Path, site: Path, bin_dir: Path, python: Path) -> int:
    """Link one store entry's files into the layer; its scripts are copied with the
    layer's interpreter on their ``#!`` line. The number of files."""
    count = 0
    for folder, dirs, names in os.walk(entry):
        relative = Path(folder).relative_to(entry)
        in_bin = relative.parts[:1] == ("bin",)
        target = bin_dir.joinpath(*relative.parts[1:]) if in_bin else site / relative
        target.mkdir(parents=True, exist_ok=True)
        linked_dirs = [d for d in dirs if (Path(folder) / d).is_symlink()]  # not walked
        for name in [*names, *linked_dirs]:
            if not relative.parts and name == ".ready":
                continue
            source, dest = Path(folder) / name, target / name
            if dest.exists() or dest.is_symlink():
                dest.unlink()  # a later wheel's file wins, as with pip
            if in_bin:
                _script(source, dest, python)
            elif source.is_symlink():
                dest.symlink_to(os.readlink(source))
            else:
                _hard_link(source, dest)
            count += 1
    return count


def _hard_link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError as exc:  # the store on another file system: a copy
        if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
            raise
        shutil.copy2(source, dest)


def _script(source: Path, dest: Path, python: Path) -> None:
    data = source.read_bytes()
    if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
        data = b"#!" + str(python).encode() + b"\n" + data.split(b"\n", 1)[1]
    dest.write_bytes(data)
    dest.chmod(0o755)
