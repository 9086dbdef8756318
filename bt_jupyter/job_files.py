"""The files a job's cell wrote into its working folder, back in the notebook.

The runtime copies them to ``$BT_CHECKPOINT_DIR/bt-outputs/files/`` (see
``runtime.keep_working_files``), so on both services they travel with the checkpoint
sync and have presigned URLs like any checkpoint file; they are never model checkpoints.
A download keeps the working folder's layout, so ``model.pth`` or a ``save_pretrained``
folder opens as the cell's own code opened it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bt_jupyter import api
from bt_jupyter.checkpoints import volume_parts
from bt_jupyter.errors import DownloadError
from bt_jupyter.runtime import FILES_DIR, OUTPUTS_DIR

if TYPE_CHECKING:
    from bt_jupyter.jobs import Job

#: Where ``download()`` puts a job's files unless told: ``./bt_files/<job>/``.
DEFAULT_FOLDER = "bt_files"
_PREFIX = (OUTPUTS_DIR, FILES_DIR)


@dataclass(frozen=True)
class JobFile:
    """One file the cell wrote: its path in the working folder, node, size and URL."""

    path: str
    node: int
    size_bytes: int
    url: str = field(repr=False)
    job: Job = field(repr=False, compare=False)

    def download(self, dest: Path | str | None = None) -> Path:
        """Fetch it into ``dest`` (a folder; default ``./bt_files/<job>/``) at its
        working-folder path; kept if already there at its size. Returns the file."""
        target = files_folder(self.job, dest).joinpath(*PurePosixPath(self.path).parts)
        if target.is_file() and target.stat().st_size == self.size_bytes:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        self.job.fetch(self.url, partial)
        os.replace(partial, target)
        return target

    def load(self, dest: Path | str | None = None) -> Any:
        """Download, then open it the usual way for its kind: ``torch.load`` for
        ``.pt``/``.pth``/``.ckpt``/``.bin``, a DataFrame for ``.csv`` (pandas), JSON,
        an image to display, text; other kinds give the downloaded path."""
        return open_file(self.download(dest))


def _inside_files(relative: str) -> PurePosixPath | None:
    """The working-folder path of a checkpoint file name, or None: not one of the
    cell's files. Names that climb out or are absolute are refused."""
    parts = volume_parts(relative, "file")
    if tuple(parts[:2]) != _PREFIX or len(parts) < 3:
        return None
    return PurePosixPath(*parts[2:])


def files_of(job: Job, node: int | None = 0) -> list[JobFile]:
    """The files of ``job`` (of one node, or every node with ``node=None``), by path."""
    return listed_files(job, job.checkpoint_files(), node)


def listed_files(
    job: Job, listed: list[api.CheckpointFile], node: int | None = None
) -> list[JobFile]:
    """The cell's files among a job's checkpoint files."""
    found = []
    for item in listed:
        if node is not None and item.node_rank != node:
            continue
        inside = _inside_files(item.relative_file_name)
        if inside is not None:
            found.append(JobFile(inside.as_posix(), item.node_rank, item.size_bytes, item.url, job))
    return sorted(found, key=lambda f: (f.path, f.node))


def download_all(job: Job, dest: Path | str | None = None, node: int = 0) -> Path:
    """Every file of one node into ``dest`` (default ``./bt_files/<job>/``), laid out as
    the working folder was; returns the folder."""
    found = files_of(job, node)
    if not found:
        raise DownloadError(
            f"job {job.id} kept no files from node {node}: its cell wrote none into its "
            "working folder (or the checkpoint sync has not copied them yet)"
        )
    for item in found:
        item.download(dest)
    return files_folder(job, dest)


def files_folder(job: Job, dest: Path | str | None) -> Path:
    """Where a job's files are downloaded: ``dest``, or ``./bt_files/<job>/``."""
    folder = Path(dest) if dest is not None else Path.cwd() / DEFAULT_FOLDER / job.id
    return folder.expanduser().resolve()


_TORCH = {".pt", ".pth", ".ckpt", ".bin"}
_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}
_TEXT = {".txt", ".md", ".log", ".yaml", ".yml"}


def open_file(path: Path) -> Any:
    """A downloaded file opened as its kind is usually opened (see ``JobFile.load``)."""
    suffix = path.suffix.lower()
    if suffix in _TORCH:
        import torch

        # the user's own job wrote it; a whole model (torch.save(model)) needs the pickle
        return torch.load(path, map_location="cpu", weights_only=False)
    if suffix == ".csv":
        try:
            import pandas  # type: ignore[import-untyped]
        except ImportError:
            return path.read_text()
        return pandas.read_csv(path)
    if suffix == ".json":
        return json.loads(path.read_text())
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if suffix in _IMAGES:
        from IPython.display import SVG, Image

        if suffix == ".svg":
            return SVG(filename=str(path))  # type: ignore[no-untyped-call]
        return Image(filename=str(path))  # type: ignore[no-untyped-call]
    if suffix in _TEXT:
        return path.read_text()
    return path
