"""What the image cache holds, and freeing what no recent job used
(``bt-jupyter local cache [list|prune]``).

The cache (``$BT_JUPYTER_IMAGE_CACHE``) holds image stand-ins, requirements layers, the
package store the layers link their files from, and uv's download cache. A layer's
``<key>.lock`` is touched by every job that uses it (at its start, then hourly while it
runs): its age is how long no job used the layer. Pruning removes layers unused for so
many days, then store entries no remaining layer links, then uv's download cache (what
the store holds stays on disk through the store's own links).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bt_jupyter.local.package_store import locked, remove_tree, uv_binary

#: What a layer lists of the store entries it links (one folder name per line).
STORE_LIST = ".store"
DAY_S = 86_400.0


@dataclass(frozen=True)
class Entry:
    kind: str  # "image" | "layer" | "package" | "downloads"
    name: str
    what: str
    bytes: int  # on disk, each file once (shared files counted where first seen)
    unused_days: float | None


def _last_use(root: Path) -> float | None:
    lock = root.parent / f"{root.name}.lock"
    try:
        return (time.time() - lock.stat().st_mtime) / DAY_S
    except FileNotFoundError:
        return None


def _bytes(root: Path, seen: set[tuple[int, int]]) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def _first_line(path: Path) -> str:
    try:
        return path.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def _store_folders(cache: Path) -> list[Path]:
    store = cache / "store"
    if not store.is_dir():
        return []
    return sorted(e for py in store.iterdir() if py.is_dir() for e in py.iterdir() if e.is_dir())


def _layers(cache: Path) -> list[Path]:
    folder = cache / "layers"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def entries(cache: Path) -> list[Entry]:
    """Everything the cache holds; a store entry's bytes are its own, a layer's only
    what it does not link from the store."""
    seen: set[tuple[int, int]] = set()
    found = [
        Entry("package", e.name, _first_line(e / ".ready"), _bytes(e, seen), None)
        for e in _store_folders(cache)
    ]
    for layer in _layers(cache):
        what = ", ".join(_ready_lines(layer))
        found.append(Entry("layer", layer.name, what, _bytes(layer, seen), _last_use(layer)))
    images = cache / "images"
    for image in sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else []:
        ready = _first_line(image / ".ready")
        found.append(Entry("image", image.name, ready, _bytes(image, seen), _last_use(image)))
    if (cache / "uv").is_dir():
        size = _bytes(cache / "uv", seen)
        found.append(Entry("downloads", "uv", "uv's download cache", size, None))
    return found


def _ready_lines(layer: Path) -> list[str]:
    try:
        return [x for x in (layer / ".ready").read_text().splitlines() if x.strip()]
    except OSError:
        return ["(not ready)"]


def mark_used(roots: Iterable[Path]) -> None:
    """A job uses these layers now (pruning spares them)."""
    for root in roots:
        lock = root.parent / f"{root.name}.lock"
        try:
            lock.touch()
        except OSError:
            continue


def prune(cache: Path, unused_days: float) -> tuple[list[str], int]:
    """Remove what no job used for ``unused_days``: (what was removed, bytes freed)."""
    before = sum(e.bytes for e in entries(cache))
    removed: list[str] = []
    for layer in _layers(cache):
        age = _last_use(layer)
        if age is not None and age < unused_days:
            continue
        what = ", ".join(_ready_lines(layer))
        with locked(layer):  # a job starting with it waits, then builds it anew
            remove_tree(layer)
        removed.append(f"layer {layer.name} ({what})")
    linked: set[str] = set()
    images = cache / "images"
    for layer in [*_layers(cache), *(images.iterdir() if images.is_dir() else [])]:
        try:
            linked.update((layer / STORE_LIST).read_text().split())
        except OSError:
            continue  # built by pip (or a lock file): it links nothing
    for entry in _store_folders(cache):
        if entry.name.endswith(".building") or entry.name in linked:
            continue
        with locked(entry):
            remove_tree(entry)
        removed.append(f"package {entry.name}")
    uv = uv_binary()
    if uv is not None and (cache / "uv").is_dir():
        subprocess.run(
            [uv, "cache", "clean", "--quiet"],
            env={**os.environ, "UV_CACHE_DIR": str(cache / "uv"), "UV_NO_CONFIG": "1"},
            capture_output=True, check=False,
        )  # fmt: skip
    return removed, max(0, before - sum(e.bytes for e in entries(cache)))
