"""Checkpoints on disk: what a job wrote under ``rank-N/`` and what a new job loads.

Each top-level entry of ``$BT_CHECKPOINT_DIR`` (``<job>/checkpoints/rank-N/``) is one
checkpoint, as on Baseten. A directory holding ``adapter_config.json`` is a LoRA
checkpoint (its base model and adapter config are reported); anything else is full.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bt_jupyter.local.store import CheckpointRow


def rank_dirs(root: Path) -> list[tuple[int, Path]]:
    found = []
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name.startswith("rank-") and child.name[5:].isdigit():
                found.append((int(child.name[5:]), child))
    return sorted(found)


def _size(path: Path) -> tuple[int, float]:
    """Total bytes and the newest mtime under ``path``."""
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime
    total, newest = 0, path.stat().st_mtime
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:
                continue  # written and removed while we looked
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


def scan(job_id: str, root: Path) -> list[CheckpointRow]:
    """The checkpoints of every rank; one per name (sizes summed over ranks)."""
    by_name: dict[str, CheckpointRow] = {}
    for _, rank in rank_dirs(root):
        for entry in sorted(rank.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                size, _ = _size(entry)
                created = entry.stat().st_ctime
            except FileNotFoundError:
                continue
            adapter = _adapter_config(entry)
            previous = by_name.get(entry.name)
            by_name[entry.name] = CheckpointRow(
                job_id=job_id,
                name=entry.name,
                created_at=min(created, previous.created_at) if previous else created,
                size_bytes=size + (previous.size_bytes if previous else 0),
                checkpoint_type="lora" if adapter is not None else "full",
                base_model=(adapter or {}).get("base_model_name_or_path"),
                lora_adapter_config=adapter,
            )
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


def files(root: Path) -> list[tuple[int, str, Path]]:
    """Every checkpoint file as (node rank, path relative to the checkpoint root, path)."""
    found = []
    for rank, folder in rank_dirs(root):
        for dirpath, _, names in os.walk(folder):
            for name in sorted(names):
                path = Path(dirpath) / name
                found.append((rank, path.relative_to(root).as_posix(), path))
    return sorted(found, key=lambda f: f[1])


def place(source_root: Path, name: str, target_root: Path) -> int:
    """Copy checkpoint ``name`` of every rank into ``target_root/rank-N/name``.

    Copies, not links: a job that rewrites a loaded file must not change the original.
    Returns the number of ranks placed.
    """
    placed = 0
    for rank, folder in rank_dirs(source_root):
        source = folder / name
        if not source.exists():
            continue
        target = target_root / f"rank-{rank}" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
        placed += 1
    return placed
