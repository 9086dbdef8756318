"""Inside a job: the training libraries report to the job with no code in the cell.

When the cell (or anything it calls) imports ``transformers.trainer``, every ``Trainer``
(TRL's ``SFTTrainer``/``DPOTrainer`` are Trainers) gets :class:`JobCallback` through the
library's own extension point, its ``DEFAULT_CALLBACKS`` list: each ``logs`` dict (loss,
learning_rate, grad_norm, eval_*) becomes a ``[bt-metric]`` record for the widget, and
checkpoints go to ``$BT_CHECKPOINT_DIR`` for any relative ``output_dir`` (the code's own
path is left as a link there); an absolute one elsewhere is a ``[bt-warning]``.
The user's ``report_to`` (W&B, MLflow, ...) and callbacks are left as they are.

PyTorch Lightning finds :func:`lightning_callbacks` through its own extension point, the
``lightning.pytorch.callbacks_factory`` entry point (the bundle carries the entry point's
metadata next to the cell): every Lightning ``Trainer`` then also logs to
:class:`JobLogger`, beside its own loggers, and its ``ModelCheckpoint`` saves on the
checkpoint volume. ``accelerate`` users pass
:func:`accelerate_tracker` to ``Accelerator(log_with=...)``.

Like runtime.py this travels in every bundle: standard library only, and it imports the
training libraries only once the cell has.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import json
import math
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Same prefix as ``runtime.METRIC_PREFIX`` (not imported: runtime imports this module).
METRIC_PREFIX = "[bt-metric] "

#: What a Trainer logs about its own speed, not the model's: left out of the charts.
SPEED_KEYS = frozenset(
    f"{split}_{what}"
    for split in ("train", "eval", "test", "predict")
    for what in ("runtime", "samples_per_second", "steps_per_second")
) | {"total_flos"}

Hook = Callable[[types.ModuleType], None]


def emit(step: int | None, values: dict[str, Any]) -> None:
    """One metric record (finite numbers only) as one log line; the service tags it with
    the node that printed it."""
    record: dict[str, Any] = {"step": step, "time": time.time()}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            record[name] = float(value)
    if len(record) > 2:
        print(METRIC_PREFIX + json.dumps(record, separators=(",", ":")), flush=True)


def _note(message: str) -> None:
    print(f"bt_jupyter: {message}", flush=True)


# --------------------------------------------------------------------------- import hooks


class _ThenRun(importlib.abc.Loader):
    """A module's own loader, then a hook on the loaded module."""

    def __init__(self, loader: importlib.abc.Loader, hook: Hook) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            self._hook(module)
        except Exception as exc:  # a hook never breaks the user's import
            _note(f"could not connect {module.__name__} to the job ({exc!r})")

    def __getattr__(self, name: str) -> Any:  # get_source, get_data, is_package, ...
        return getattr(self._loader, name)


class AfterImport(importlib.abc.MetaPathFinder):
    """Runs a hook right after a named module is imported (the import is otherwise the
    one every other finder would do)."""

    def __init__(self, hooks: dict[str, Hook]) -> None:
        self.hooks = hooks

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        hook = self.hooks.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ThenRun(spec.loader, hook)
                return spec
        return None


def install() -> None:
    """Connect the training libraries the job imports (now or later) to the job."""
    hooks: dict[str, Hook] = {"transformers.trainer": connect_transformers}
    for name, hook in hooks.items():
        if name in sys.modules:
            hook(sys.modules[name])
    if not any(isinstance(f, AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, AfterImport(hooks))


# --------------------------------------------------------------------------- transformers


def connect_transformers(trainer_module: types.ModuleType) -> None:
    """Every Trainer made from now on reports to the job (``DEFAULT_CALLBACKS`` is what
    Trainer adds to every instance, before the user's ``callbacks`` and ``report_to``)."""
    defaults: list[Any] = trainer_module.DEFAULT_CALLBACKS
    if any(getattr(c, "bt_jupyter", False) for c in defaults):
        return
    defaults.append(_job_callback_class(trainer_module.TrainerCallback))


def _job_callback_class(base: type) -> type:
    class JobCallback(base):  # type: ignore[misc]
        """Reports a transformers Trainer to the bt_jupyter job: logs -> metrics, and
        checkpoints into ``$BT_CHECKPOINT_DIR`` unless ``output_dir`` was chosen."""

        bt_jupyter = True

        def on_init_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            place_checkpoints(args)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
        ) -> None:
            # one record per node (its local rank 0); the node tags it
            if logs and state.is_local_process_zero:
                emit(int(state.global_step), {k: v for k, v in logs.items() if k not in SPEED_KEYS})

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                tidy_checkpoint_root(args, folder)
                _note(f"Trainer saved {folder}")

        def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.is_world_process_zero:
                latest = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                tidy_checkpoint_root(args, latest)

    JobCallback.__qualname__ = JobCallback.__name__
    JobCallback.__module__ = __name__
    return JobCallback


#: Files a Trainer writes next to its checkpoints (TRL's model card).
ROOT_FILES = ("README.md",)


def tidy_checkpoint_root(args: Any, checkpoint: Path) -> None:
    """Each top-level entry of ``$BT_CHECKPOINT_DIR`` is one checkpoint (on Baseten as
    here): a model card the Trainer wrote beside its checkpoints moves into the newest
    one, so the job lists only checkpoints (it was a stray ``.`` checkpoint)."""
    target = os.environ.get("BT_CHECKPOINT_DIR")
    root = Path(str(args.output_dir))
    if not target or root.resolve() != Path(target).resolve() or not checkpoint.is_dir():
        return
    for name in ROOT_FILES:
        if (root / name).is_file():
            os.replace(root / name, checkpoint / name)


def place_checkpoints(args: Any) -> None:
    """A Trainer's checkpoints become the job's: any relative ``output_dir`` (the
    default ``trainer_output``, TRL's ``<model>-SFT``, a tutorial's ``"my_model"``) is
    pointed at ``$BT_CHECKPOINT_DIR``, and the name the code gave is left on the node as
    a link there, so ``my_model/checkpoint-500`` still opens; a chosen folder elsewhere
    is kept and warned about."""
    placed = keep_on_volume(Path(str(args.output_dir)), "Trainer output_dir")
    if placed is not None:
        args.output_dir = str(placed)


def keep_on_volume(chosen: Path, what: str, subfolder: str | None = None) -> Path | None:
    """Where ``chosen`` should be for its files to outlive the node (None: where it is).

    Relative to the working folder: ``$BT_CHECKPOINT_DIR`` (or its ``subfolder``), with
    ``chosen`` made a link to it. Already under the checkpoints: kept. Elsewhere (an
    absolute path the user picked): kept, with a warning the widget shows.
    """
    target = os.environ.get("BT_CHECKPOINT_DIR")
    if not target:
        return None
    volume = Path(target)
    place = volume / subfolder if subfolder else volume
    absolute = chosen if chosen.is_absolute() else Path.cwd() / chosen
    if _under(absolute, volume):
        return None
    if not _under(absolute, Path.cwd()):
        warn(
            f"{what} {chosen} is outside $BT_CHECKPOINT_DIR: what is saved there stays on "
            "this node and is gone when the job ends (use a relative path, or one under "
            "$BT_CHECKPOINT_DIR, to keep it)"
        )
        return None
    place.mkdir(parents=True, exist_ok=True)
    _link(absolute, place)
    _note(f"{what} {chosen} is kept as the job's checkpoints ($BT_CHECKPOINT_DIR)")
    return place


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _link(name: Path, place: Path) -> None:
    """Leave ``name`` on the node as a link to ``place`` (an empty folder a library made
    first is replaced; a folder that holds files, e.g. sent from the notebook, is left)."""
    with contextlib.suppress(OSError):
        name.rmdir()
    if name.is_symlink():
        return
    if name.exists():
        warn(
            f"{name.name} in the working folder already holds files (sent from the "
            f"notebook?): what is saved now goes to {place}, so read it from there"
        )
        return
    with contextlib.suppress(FileExistsError):  # each torchrun worker links it
        name.parent.mkdir(parents=True, exist_ok=True)
        name.symlink_to(place, target_is_directory=True)


#: How a job's runtime warns the notebook: the widget shows each such line above its log.
WARNING_PREFIX = "[bt-warning] "


def warn(message: str) -> None:
    """A warning for the notebook's widget (and the log)."""
    print(WARNING_PREFIX + " ".join(message.split()), flush=True)


def parse_warning(message: str) -> str | None:
    """The warning a log line holds (after a progress bar's ``\r`` too), else None."""
    at = message.rfind(WARNING_PREFIX)
    if at < 0:
        return None
    return message[at + len(WARNING_PREFIX) :].split("\r", 1)[0].strip() or None


# --------------------------------------------------------------------------- accelerate


def accelerate_tracker() -> Any:
    """An ``accelerate`` tracker for ``Accelerator(log_with=[accelerate_tracker(), ...])``:
    ``accelerator.log({...}, step=n)`` then reaches the widget as well."""
    from accelerate.tracking import GeneralTracker

    class JobTracker(GeneralTracker):  # type: ignore[misc]
        name = "bt_jupyter"
        requires_logging_directory = False

        def __init__(self) -> None:
            super().__init__()

        @property
        def tracker(self) -> None:
            return None

        def store_init_configuration(self, values: dict[str, Any]) -> None:
            pass

        def log(self, values: dict[str, Any], step: int | None = None, **_: Any) -> None:
            if os.environ.get("LOCAL_RANK", "0") == "0":
                emit(step, values)

    return JobTracker()


# --------------------------------------------------------------------------- Lightning

#: The entry points the bundle declares (``bt_jupyter_job.dist-info/entry_points.txt``):
#: Lightning calls each factory for every Trainer it makes.
LIGHTNING_ENTRY_POINTS = {
    "lightning.pytorch.callbacks_factory": "bt_jupyter.trackers:lightning_callbacks",
    "pytorch_lightning.callbacks_factory": "bt_jupyter.trackers:pytorch_lightning_callbacks",
}


def lightning_callbacks() -> list[Any]:
    """For ``lightning.pytorch``: a callback that adds :class:`JobLogger` to the Trainer."""
    import lightning.pytorch as pl

    return [_lightning_classes(pl)[0]()]


def pytorch_lightning_callbacks() -> list[Any]:
    """The same for the older ``pytorch_lightning`` package."""
    import pytorch_lightning as pl

    return [_lightning_classes(pl)[0]()]


def _lightning_classes(pl: types.ModuleType) -> tuple[type, type]:
    class JobLogger(pl.loggers.Logger):  # type: ignore[misc, name-defined]
        """Every metric a LightningModule logs (``self.log``) reaches the job's widget."""

        @property
        def name(self) -> str:
            return "bt_jupyter"

        @property
        def version(self) -> str:
            return os.environ.get("BT_TRAINING_JOB_ID", "0")

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            if os.environ.get("LOCAL_RANK", "0") == "0":  # one record per node
                emit(step, {k: float(v) for k, v in metrics.items() if _number(v)})

    class AddJobLogger(pl.Callback):  # type: ignore[misc, name-defined]
        """Adds :class:`JobLogger` to the Trainer's loggers (its own are kept)."""

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if not any(isinstance(lg, JobLogger) for lg in trainer.loggers):
                trainer.loggers = [*trainer.loggers, JobLogger()]
            # before the ModelCheckpoints' own setup (Lightning orders them last)
            for callback in trainer.checkpoint_callbacks:
                place_lightning_checkpoints(callback)

    return AddJobLogger, JobLogger


#: The checkpoint a ``ModelCheckpoint`` with no ``dirpath`` saves into (Lightning's
#: own default, ``lightning_logs/version_N/checkpoints``, would vanish with the node).
LIGHTNING_CHECKPOINT = "lightning"


def place_lightning_checkpoints(callback: Any) -> None:
    """A ``ModelCheckpoint``'s ``.ckpt`` files become one of the job's checkpoints:
    ``lightning`` when it has no ``dirpath``, else named after its relative one."""
    volume = os.environ.get("BT_CHECKPOINT_DIR")
    if not volume or not hasattr(callback, "dirpath"):
        return
    placed: Path | None
    if callback.dirpath is None:
        placed = Path(volume) / LIGHTNING_CHECKPOINT
        placed.mkdir(parents=True, exist_ok=True)
        _note(f"Lightning checkpoints go to $BT_CHECKPOINT_DIR/{LIGHTNING_CHECKPOINT}")
    else:  # Lightning made it absolute already
        chosen = Path(str(callback.dirpath))
        cwd = Path.cwd().resolve()
        name = (
            "-".join(chosen.resolve().relative_to(cwd).parts)
            if _under(chosen, cwd)
            else LIGHTNING_CHECKPOINT
        )
        placed = keep_on_volume(chosen, "ModelCheckpoint dirpath", subfolder=name or None)
    if placed is not None:
        callback.dirpath = str(placed)


def _number(value: Any) -> bool:
    """A float, an int or a one-element tensor (what ``self.log`` hands a logger)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    numel = getattr(value, "numel", None)
    return callable(numel) and numel() == 1
