"""Checkpoints on disk: what a job wrote under ``rank-N/`` and what a new job loads.

Each top-level folder of ``$BT_CHECKPOINT_DIR`` (``<job>/checkpoints/rank-N/``) is one
checkpoint, and the files at its root are one more named ``.``, as on Baseten. A directory
holding ``adapter_config.json`` is a LoRA checkpoint (its base model and adapter config are
reported); anything else is full.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bt_jupyter.api import ROOT_CHECKPOINT
from bt_jupyter.local.home import inside
from bt_jupyter.local.store import CheckpointRow
from bt_jupyter.runtime import OUTPUTS_DIR

#: Folders of ``--out`` values: this version's and the dot-folder of earlier ones.
OUTPUTS_DIRS = frozenset({OUTPUTS_DIR, ".bt_outputs"})


def rank_dirs(root: Path) -> list[tuple[int, Path]]:
    found = []
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name.startswith("rank-") and child.name[5:].isdigit():
                found.append((int(child.name[5:]), child))
    return sorted(found)


def _synced(path: Path, synced_before: float | None) -> bool:
    """Has the stand-in's uploader copied this file yet (written before ``synced_before``)?"""
    if synced_before is None:
        return True
    try:
        return path.stat().st_mtime <= synced_before
    except FileNotFoundError:
        return False


def _size(path: Path, synced_before: float | None = None) -> int:
    """Total bytes of the synced files under ``path`` (a file or a folder)."""
    if path.is_file():
        return path.stat().st_size if _synced(path, synced_before) else -1
    total, any_file = 0, False
    for folder, _, names in os.walk(path):
        for name in names:
            file = Path(folder) / name
            try:
                st = file.stat()
            except FileNotFoundError:
                continue  # written and removed while we looked
            if synced_before is None or st.st_mtime <= synced_before:
                total, any_file = total + st.st_size, True
    return total if any_file or synced_before is None else -1


def is_model_checkpoint(name: str) -> bool:
    """False for what bt_jupyter writes next to checkpoints (``--out`` values)."""
    return name not in OUTPUTS_DIRS


def scan(
    job_id: str,
    root: Path,
    *,
    include_outputs: bool = False,
    synced_before: float | None = None,
) -> list[CheckpointRow]:
    """The checkpoints of every rank, oldest first; one per name (sizes summed over ranks).

    Each top-level folder of ``rank-N/`` is one checkpoint; the files at ``rank-N/``
    itself are one more, named ``.`` (as Baseten reports them). The ``--out`` folder is
    left out unless ``include_outputs`` (Baseten, not knowing it, lists it). With
    ``synced_before`` only files written before then count (the stand-in's sync delay).
    """
    by_name: dict[str, CheckpointRow] = {}

    def add(name: str, entry: Path, size: int, created: float) -> None:
        if size < 0:
            return  # nothing of it synced yet
        adapter = _adapter_config(entry)
        previous = by_name.get(name)
        by_name[name] = CheckpointRow(
            job_id=job_id,
            name=name,
            created_at=min(created, previous.created_at) if previous else created,
            size_bytes=size + (previous.size_bytes if previous else 0),
            checkpoint_type="lora" if adapter is not None else "full",
            base_model=(adapter or {}).get("base_model_name_or_path"),
            lora_adapter_config=adapter,
        )

    for _, rank in rank_dirs(root):
        root_files: list[Path] = []
        for entry in sorted(rank.iterdir()):
            if entry.name.startswith("."):
                continue
            if not include_outputs and not is_model_checkpoint(entry.name):
                continue
            try:
                if entry.is_dir():
                    add(entry.name, entry, _size(entry, synced_before), entry.stat().st_ctime)
                elif entry.is_file() and _synced(entry, synced_before):
                    root_files.append(entry)
            except FileNotFoundError:
                continue
        if root_files:
            try:
                size = sum(f.stat().st_size for f in root_files)
                created = min(f.stat().st_mtime for f in root_files)
            except FileNotFoundError:
                continue
            add(ROOT_CHECKPOINT, rank, size, created)
    return sorted(by_name.values(), key=lambda c: (c.created_at, c.name))


def _adapter_config(entry: Path) -> dict[str, Any] | None:
    config = entry / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def files(root: Path, synced_before: float | None = None) -> list[tuple[int, str, Path]]:
    """Every (synced) checkpoint file as (node rank, path relative to the checkpoint
    root, path)."""
    found = []
    for rank, folder in rank_dirs(root):
        for dirpath, _, names in os.walk(folder):
            for name in sorted(names):
                path = Path(dirpath) / name
                if _synced(path, synced_before):
                    found.append((rank, path.relative_to(root).as_posix(), path))
    return sorted(found, key=lambda f: f[1])


def folder_of(rank_dir: Path, name: str) -> Path:
    """Where checkpoint ``name`` of one rank lies: ``.`` is the rank's own files, any
    other name one entry of it (UnsafePathError for a name that would lead elsewhere)."""
    return rank_dir if name == ROOT_CHECKPOINT else inside(rank_dir, name, "checkpoint name")


def place(source_root: Path, name: str, target_root: Path) -> int:
    """Copy checkpoint ``name`` of every rank into ``target_root/rank-N/name``.

    Copies, not links: a job that rewrites a loaded file must not change the original.
    Returns the number of ranks placed.
    """
    if name != ROOT_CHECKPOINT:
        folder_of(source_root, name)  # refused before anything is copied
    placed = 0
    for rank, folder in rank_dirs(source_root):
        if name == ROOT_CHECKPOINT:  # the files at the rank's root, not its folders
            tops = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
            if tops:
                target_dir = target_root / f"rank-{rank}"
                target_dir.mkdir(parents=True, exist_ok=True)
                for file in tops:
                    shutil.copy2(file, target_dir / file.name)
                placed += 1
            continue
        source = folder_of(folder, name)
        if not source.exists():
            continue
        target = folder_of(target_root / f"rank-{rank}", name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        placed += 1
    return placed
