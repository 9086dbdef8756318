"""A job's checkpoints back in the notebook: download one, load it with Hugging Face.

Both services give every checkpoint file a download URL (``checkpoint_files``), so a
download is written once for both. Files are fetched into ``<name>.part`` and renamed, so
an interrupted download is never taken for a finished file, and a second ``download()``
fetches only what is missing. Every name the service returns is checked before anything
is written: no ``..``, no absolute path.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from bt_jupyter import api
from bt_jupyter.errors import DownloadError

if TYPE_CHECKING:
    from bt_jupyter.jobs import Job

#: Where ``download()`` puts a checkpoint unless told: ``./bt_checkpoints/<job>/<name>``.
DEFAULT_FOLDER = "bt_checkpoints"
#: The name Baseten and the local service give the files at the checkpoint root.
ROOT_CHECKPOINT = "."


class Checkpoint(api.TrainingJobCheckpointV1):
    """One checkpoint of a job (the wire model, plus ``download`` and ``path``)."""

    _job: Job | None = PrivateAttr(default=None)
    _path: Path | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, job: Job, wire: api.TrainingJobCheckpointV1) -> Checkpoint:
        found = cls.model_validate(wire.model_dump())
        found._job = job
        return found

    @property
    def name(self) -> str:
        return self.checkpoint_id

    @property
    def path(self) -> Path | None:
        """The downloaded folder, once :meth:`download` has run (else None)."""
        return self._path

    @property
    def is_lora(self) -> bool:
        return self.lora_adapter_config is not None or self.checkpoint_type.lower() == "lora"

    def files(self, node: int = 0) -> list[tuple[PurePosixPath, api.CheckpointFile]]:
        """(path inside this checkpoint, file) for each of its files on ``node``."""
        if self._job is None:
            raise DownloadError("this checkpoint is not attached to a job: use job.checkpoints()")
        found = []
        for item in self._job.checkpoint_files():
            if item.node_rank != node:
                continue
            inside = _inside_checkpoint(item.relative_file_name, self.checkpoint_id)
            if inside is not None:
                found.append((inside, item))
        return found

    def download(
        self, dest: Path | str | None = None, *, node: int = 0, progress: bool = True
    ) -> Path:
        """Fetch this checkpoint's files (node ``node``'s) into ``dest`` (default
        ``./bt_checkpoints/<job>/<name>``); files already there at their size are kept.
        Returns the folder, also kept as :attr:`path`."""
        files = self.files(node)  # refuses a checkpoint with no job
        job = self._job
        assert job is not None
        if not files:
            raise DownloadError(
                f"checkpoint {self.checkpoint_id} of job {job.id} has no files on node {node} "
                "yet (Baseten syncs checkpoints while the job runs; try again shortly)"
            )
        folder = Path(dest) if dest is not None else _default_folder(job, self.checkpoint_id)
        folder = folder.expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        total = sum(f.size_bytes for _, f in files)
        bar = _progress(total, f"{self.checkpoint_id}", progress)
        try:
            for inside, item in files:
                target = folder.joinpath(*inside.parts)
                if target.is_file() and target.stat().st_size == item.size_bytes:
                    bar.update(item.size_bytes)
                    continue
                partial = target.with_name(target.name + ".part")
                job.fetch(item.url, partial)
                os.replace(partial, target)
                bar.update(item.size_bytes)
        finally:
            bar.close()
        self._path = folder
        return folder


def volume_parts(relative: str, what: str = "checkpoint file") -> tuple[str, ...]:
    """The parts of a file name the service gave, under the checkpoint volume: without
    the node's ``rank-N/`` folder (the local service has one; Baseten's may not). A name
    that climbs out or is absolute is refused."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\x00" in relative:
        raise DownloadError(f"the service returned an unsafe {what} name {relative!r}")
    parts = path.parts
    if parts[0].startswith("rank-") and parts[0][5:].isdigit():
        parts = parts[1:]
    return parts


def _inside_checkpoint(relative: str, checkpoint_id: str) -> PurePosixPath | None:
    """Where a checkpoint file lies inside checkpoint ``checkpoint_id`` (None: another
    one's)."""
    parts = volume_parts(relative)
    if checkpoint_id == ROOT_CHECKPOINT:
        return PurePosixPath(*parts) if len(parts) == 1 else None
    wanted = PurePosixPath(checkpoint_id).parts
    if tuple(parts[: len(wanted)]) != wanted or len(parts) == len(wanted):
        return None
    return PurePosixPath(*parts[len(wanted) :])


def _default_folder(job: Job, name: str) -> Path:
    safe = "root" if name == ROOT_CHECKPOINT else name
    return Path.cwd() / DEFAULT_FOLDER / job.id / safe


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, label: str, shown: bool) -> Any:
    """A tqdm bar in bytes (a widget in a notebook, text in a terminal)."""
    if not shown:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label)


# --------------------------------------------------------------------------- load_hf


def load_hf(
    checkpoint: Checkpoint | Path | str, *, base: str | Path | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a Hugging Face causal-LM checkpoint: full weights, or a
    LoRA adapter on its base model (``base`` overrides the adapter's own
    ``base_model_name_or_path``; a relative one is read from the current folder, where the
    job's ``--include`` took it from). A job's checkpoint is downloaded first if needed."""
    if isinstance(checkpoint, Checkpoint):
        folder = checkpoint.path or checkpoint.download()
    else:
        folder = Path(checkpoint).expanduser()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise DownloadError(
            "load_hf needs transformers (and peft for LoRA adapters): pip install transformers"
        ) from None
    adapter = folder / "adapter_config.json"
    model: Any
    if adapter.is_file():
        from peft import PeftModel

        named = base or json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not named:
            raise DownloadError(
                f"{folder} is a LoRA adapter that does not name its base model: "
                "pass load_hf(checkpoint, base=...)"
            )
        with warnings.catch_warnings():  # peft reads a property transformers deprecates
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            model = PeftModel.from_pretrained(
                AutoModelForCausalLM.from_pretrained(str(named), **kwargs), str(folder)
            )
        tokenizer_source = folder if (folder / "tokenizer_config.json").is_file() else named
    elif (folder / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        tokenizer_source = folder
    else:
        raise DownloadError(
            f"{folder} is not a Hugging Face model folder (no config.json or adapter_config.json)"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    model.eval()
    return model, tokenizer
