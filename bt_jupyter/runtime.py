"""Runs inside the job: ``python -m bt_jupyter.runtime`` executes the packaged cell.

It restores the notebook state the cell needs (imports, then the pickled names), runs
the cell with tracebacks that point at the cell's own lines, flushes output line by line,
keeps the files the cell wrote into its working folder (``job.files()``), and saves the
variables named by ``--out`` for ``job.outputs()``. It also offers what
training code calls: :func:`log_metrics` and :func:`checkpoint_dir`.

This module (with trackers.py, the training-library hooks) travels inside every bundle,
so it imports only the standard library and cloudpickle: the job's image needs nothing
of bt_jupyter installed.
"""

from __future__ import annotations

import argparse
import builtins
import datetime
import json
import linecache
import os
import pickle
import re
import shutil
import sys
import time
import traceback
import types
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bt_jupyter import trackers

BUNDLE_DIR = "bt_bundle"
#: Where ``--out`` values go, under ``$BT_CHECKPOINT_DIR``: a plain (non-dot) folder, so
#: Baseten's checkpoint sync copies it like any other; clients never list it as a model
#: checkpoint nor pick it as "latest".
OUTPUTS_DIR = "bt-outputs"
OUTPUTS_FILE = "outputs.pkl"
#: Where the files the cell wrote into its working folder are kept, under OUTPUTS_DIR.
FILES_DIR = "files"
#: How much of them is kept (the manifest's ``files_mb``, a notebook setting).
DEFAULT_FILES_MB = 1024
#: How many of them: a dataset unpacked into the working folder is not an output.
MAX_FILES = 10_000
#: Never kept: the bundle's own folder and bytecode caches (what the job brought is
#: unchanged, so it is not kept either).
_NOT_FILES = frozenset({BUNDLE_DIR, "__pycache__"})
METRIC_PREFIX = trackers.METRIC_PREFIX


def log_metrics(step: int | None = None, **values: float) -> None:
    """Record metrics (loss, lr, ...) for the widget's plots: one log line per call.

    Only the global rank 0 process records, so a DDP job logs each step once.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    record: dict[str, Any] = {"step": step, "time": time.time()}
    for name, value in values.items():
        record[name] = float(value)
    print(METRIC_PREFIX + json.dumps(record, separators=(",", ":")), flush=True)


#: A terminal escape sequence (colours, cursor moves) that a progress bar writes.
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def parse_metric(message: str) -> dict[str, Any] | None:
    """The record a log line holds, or None.

    The record need not start the line: a progress bar (tqdm, Lightning's) redraws with
    ``\r`` and no newline, so a record printed meanwhile lands after the bar on the same
    line. The last ``[bt-metric] `` counts, up to the next ``\r``, without colour codes.
    The same rule, tested with the same cases (tests/cases/metric_lines.json), is
    labextension/src/metricLine.ts.
    """
    at = message.rfind(METRIC_PREFIX)
    if at < 0:
        return None
    text = message[at + len(METRIC_PREFIX) :].split("\r", 1)[0]
    if "\x1b" in text:
        text = _ESCAPE.sub("", text)
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def checkpoint_dir() -> Path:
    """Where to write checkpoints (``$BT_CHECKPOINT_DIR``); each sub-folder is one checkpoint."""
    folder = os.environ.get("BT_CHECKPOINT_DIR")
    if not folder:
        raise RuntimeError(
            "checkpointing is off for this job: submit it with --checkpointing "
            "(CheckpointingConfig(enabled=True)) to get $BT_CHECKPOINT_DIR"
        )
    return Path(folder)


# --------------------------------------------------------------------------- run the cell


def load_cell_namespace(bundle: Path) -> dict[str, Any]:
    """The notebook state a packaged cell needs: its imports, then its pickled names."""
    import cloudpickle  # noqa: F401  (the pickle needs it importable)

    manifest = json.loads((bundle / "manifest.json").read_text())

    buffers = [(bundle / "buffers" / f"{i}.bin").read_bytes() for i in range(manifest["buffers"])]
    values: dict[str, Any] = pickle.loads((bundle / "namespace.pkl").read_bytes(), buffers=buffers)
    namespace: dict[str, Any] | None = None
    for value in values.values():  # notebook functions share one globals dict: use it
        function = value if isinstance(value, types.FunctionType) else None
        if isinstance(value, type):
            function = next(
                (v for v in vars(value).values() if isinstance(v, types.FunctionType)), None
            )
        if function is not None and function.__module__ == "__main__":
            namespace = function.__globals__
            break
    if namespace is None:
        namespace = {}
    namespace.update({"__name__": "__main__", "__builtins__": builtins})
    for name, label in (manifest.get("code_files") or {}).items():
        if name in values:
            _relabel(values[name], label)
    for statement in manifest["imports"]:
        exec(statement, namespace)
    namespace.update(values)
    return namespace


#: The filename cloudpickle gives every code object it sends (it drops the real one).
PICKLED_FILENAME = "<dynamic-code>"


def register_sources(sources: dict[str, str]) -> None:
    """Put the notebook cells' text in ``linecache`` under their readable names, so a
    traceback shows the notebook's source line for each frame (entries with no mtime are
    never dropped by ``linecache.checkcache``)."""
    for name, text in sources.items():
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        linecache.cache[name] = (len(text), None, lines, name)


def _relabeled(code: types.CodeType, label: str) -> types.CodeType:
    """``code`` and the code nested in it, named after the notebook cell it came from."""
    consts = tuple(
        _relabeled(c, label) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    if code.co_filename != PICKLED_FILENAME:
        same = all(a is b for a, b in zip(consts, code.co_consts, strict=True))
        return code if same else code.replace(co_consts=consts)
    return code.replace(co_filename=label, co_consts=consts)


def _relabel(value: Any, label: str) -> None:
    """Give a notebook function (or each method of a notebook class) back its cell's name:
    frames then read ``File "Cell In[3]", line 4`` instead of ``<dynamic-code>``."""
    members = list(vars(value).values()) if isinstance(value, type) else [value]
    for member in members:
        target = getattr(member, "__func__", member)
        accessors = (
            [target.fget, target.fset, target.fdel] if isinstance(target, property) else [target]
        )
        for function in accessors:
            if isinstance(function, types.FunctionType):
                function.__code__ = _relabeled(function.__code__, label)


def _save_outputs(names: list[str], namespace: dict[str, Any]) -> None:
    """Pickle the ``--out`` values into ``$BT_CHECKPOINT_DIR/bt-outputs/`` (rank 0 only),
    written last and atomically so a reader never sees half a file."""
    if (
        not names
        or os.environ.get("RANK", "0") != "0"
        or os.environ.get("BT_NODE_RANK", "0") != "0"
    ):
        return
    import cloudpickle

    # the class as the notebook imports it: run as `python -m`, this module is __main__,
    # and cloudpickle would send a copy of the class that the notebook's isinstance misses
    from bt_jupyter.runtime import NotSent as Sendable

    values: dict[str, Any] = {
        n: namespace[n] if n in namespace else Sendable(n, "", "the cell did not assign it", "")
        for n in names
    }
    try:
        data = cloudpickle.dumps(values, protocol=5)  # each value pickled once
    except Exception:  # pickling runs arbitrary __reduce__ code
        for name, value in values.items():  # find what cannot travel; spare the others
            try:
                cloudpickle.dumps(value, protocol=5)
            except Exception as exc:
                values[name] = Sendable.of(name, value, exc)
        data = cloudpickle.dumps(values, protocol=5)
    for value in values.values():
        if isinstance(value, Sendable):
            print(f"bt_jupyter: {value}", flush=True)
    folder = checkpoint_dir() / OUTPUTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{OUTPUTS_FILE}.tmp"
    tmp.write_bytes(data)
    tmp.replace(folder / OUTPUTS_FILE)
    sent = [n for n, v in values.items() if not isinstance(v, Sendable)]
    if sent:
        print(f"Saved outputs {', '.join(sent)} ({len(data)} bytes)", flush=True)


FileState = dict[str, tuple[int, int]]


def working_files(folder: Path) -> FileState:
    """Each file under the working folder (path -> size, mtime), links and hidden
    names left out, so what the cell writes can be told from what the job brought."""
    found: FileState = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d not in _NOT_FILES and not (here / d).is_symlink()
        )
        for name in filenames:
            path = here / name
            if name.startswith(".") or path.is_symlink():
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            found[path.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return found


def keep_working_files(before: FileState, folder: Path, limit_mb: float) -> None:
    """Copy the files the cell wrote or changed in its working folder (a saved model,
    ``model.pth``, a plot, a CSV) to ``$BT_CHECKPOINT_DIR/bt-outputs/files/``, where they
    outlive the node on both services; up to ``limit_mb`` in all, and say what was not."""
    volume = os.environ.get("BT_CHECKPOINT_DIR")
    if not volume or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    changed = sorted(
        (path, size)
        for path, (size, mtime) in working_files(folder).items()
        if before.get(path) != (size, mtime)
    )
    if not changed:
        return
    target = Path(volume) / OUTPUTS_DIR / FILES_DIR
    room, kept, count, left = int(limit_mb * 1_000_000), 0, 0, []
    for path, size in changed:
        if size > room or count >= MAX_FILES:
            left.append((path, size))
            continue
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                os.link(folder / path, destination)  # same volume: no copy
            except OSError:
                shutil.copy2(folder / path, destination)
        except OSError as exc:
            print(f"bt_jupyter: could not keep {path}: {exc}", flush=True)
            continue
        room, kept, count = room - size, kept + size, count + 1
    if count:
        print(f"bt_jupyter: kept {count} file(s) the cell wrote ({kept / 1e6:.1f} MB)", flush=True)
    if left:
        names = ", ".join(f"{p} ({s / 1e6:.1f} MB)" for p, s in left[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        trackers.warn(
            f"not kept, over the {limit_mb:g} MB or {MAX_FILES:,} files a job keeps: "
            f"{names}{more} "
            "(raise BT_JUPYTER_FILES_MB in the notebook, or save them under "
            "$BT_CHECKPOINT_DIR)"
        )


@dataclass(frozen=True)
class NotSent:
    """An ``--out`` value the job could not send back (it cannot be pickled): what the
    notebook gets in its place, saying why and what to send instead. The training it
    came from is not failed for it."""

    name: str
    type_name: str
    reason: str
    instead: str

    @classmethod
    def of(cls, name: str, value: Any, exc: BaseException) -> NotSent:
        kind = type(value)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return cls(name, f"{kind.__module__}.{kind.__qualname__}", reason, _instead(name, value))

    def __str__(self) -> str:
        kind = f" ({self.type_name})" if self.type_name else ""
        instead = f"; send {self.instead} instead" if self.instead else ""
        return f"--out {self.name}{kind} was not sent back: {self.reason}{instead}"


def _instead(name: str, value: Any) -> str:
    """Something plainer to send: what the value's usual parts are called."""
    if hasattr(getattr(value, "state", None), "log_history"):  # a transformers Trainer
        return f"{name}.state.log_history (its metrics) or {name}.model.state_dict()"
    if callable(getattr(value, "state_dict", None)):  # a torch module or optimizer
        return f"{name}.state_dict()"
    return f"plain values taken from {name} (numbers, strings, lists, dicts, arrays)"


def _python_mismatch(manifest: dict[str, Any]) -> str | None:
    """Why this interpreter cannot load the cell's state (pickled code is per-Python)."""
    wanted = manifest.get("python")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted and wanted != here:
        return (
            f"bt_jupyter: this image runs Python {here}, but the cell was packaged with "
            f"Python {wanted}; use a base image with Python {wanted} (e.g. python:{wanted}-slim)"
        )
    return None


def run_cell(bundle: Path, post_mortem_s: float | None = None) -> int:
    manifest = json.loads((bundle / "manifest.json").read_text())
    mismatch = _python_mismatch(manifest)
    if mismatch:
        print(mismatch, file=sys.stderr, flush=True)
        return 1
    cell_file = bundle / "cell.py"
    cell = manifest.get("cell") or {"name": str(cell_file), "first_line": 1}
    register_sources(manifest.get("sources") or {})
    # blank lines in front: the code's line numbers are the notebook cell's
    padding = "\n" * (int(cell["first_line"]) - 1)
    code = compile(padding + cell_file.read_text(), cell["name"], "exec")
    trackers.install()  # before the cell's imports: a Trainer reports to the job
    namespace = load_cell_namespace(bundle)
    folder = Path.cwd()
    before = working_files(folder)
    try:
        try:
            exec(code, namespace)
        finally:  # a plot or CSV written before a failure is kept too
            keep_working_files(before, folder, float(manifest.get("files_mb", DEFAULT_FILES_MB)))
        _save_outputs(manifest.get("outputs", []), namespace)
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != cell["name"]:
            tb = tb.tb_next  # start the traceback at the cell, not at this runner
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        sys.stderr.flush()
        if post_mortem_s and _serves_post_mortem():
            _post_mortem(exc, namespace, post_mortem_s)
        return 1
    return 0


def _serves_post_mortem() -> bool:
    """Only a plain process keeps its failure: under torchrun, the launcher ends every
    worker as soon as one fails."""
    return os.environ.get("LOCAL_RANK") is None


def _post_mortem(exc: BaseException, namespace: dict[str, Any], idle_timeout: float) -> None:
    """``--interactive on_failure``: keep the failed process and serve its state, with
    the failing frame's locals, to ``%bt_debug`` (``%debug`` there opens pdb at it)."""
    from bt_jupyter import session_kernel

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    frame_locals = dict(tb.tb_frame.f_locals) if tb is not None else {}
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, exc.__traceback__
    job = os.environ.get("BT_TRAINING_JOB_ID", "")
    print(
        f"{session_kernel.POST_MORTEM}: %bt_debug {job} opens the failing frame "
        f"(this process ends after {idle_timeout / 60:.4g} min without a cell)",
        flush=True,
    )
    # quiet: what the debugging prints must not become the job's error
    session_kernel.serve({**namespace, **frame_locals}, idle_timeout, echo=False)


def run_session(bundle: Path, idle_timeout: float, init_distributed: bool) -> int:
    """Session mode: the packaged state, then this node's live kernel (session_kernel)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    mismatch = _python_mismatch(manifest)
    if mismatch:
        print(mismatch, file=sys.stderr, flush=True)
        return 1
    register_sources(manifest.get("sources") or {})
    trackers.install()
    namespace = load_cell_namespace(bundle)
    if init_distributed:
        _init_distributed()
    from bt_jupyter import session_kernel

    return session_kernel.serve(namespace, idle_timeout)


def _init_distributed() -> None:
    """One process group across the job's nodes (one process per node: a session is
    interactive), with the variables torch's own launchers set, so a remote cell can call
    collectives: gloo on CPU, nccl where the node has GPUs."""
    import torch
    import torch.distributed as dist

    nodes = int(os.environ.get("BT_GROUP_SIZE") or 1)
    rank = int(os.environ.get("BT_NODE_RANK") or 0)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(nodes),
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR=os.environ.get("BT_LEADER_ADDR", "127.0.0.1"),
        MASTER_PORT=_rendezvous_port(),
    )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = float(os.environ.get("BT_RDZV_TIMEOUT_S") or RDZV_TIMEOUT_S)
    print(f"torch.distributed: joining {backend} group as rank {rank} of {nodes}", flush=True)
    dist.init_process_group(
        backend, rank=rank, world_size=nodes, timeout=datetime.timedelta(seconds=timeout)
    )
    print(f"torch.distributed: rank {rank} of {nodes} ready ({backend})", flush=True)


def _rendezvous_port() -> str:
    """The leader's port for the job's process group: the same on every node."""
    job = os.environ.get("BT_TRAINING_JOB_ID", "")
    return os.environ.get("BT_MASTER_PORT") or str(29500 + zlib.crc32(job.encode()) % 1000)


def _exit_code(exc: SystemExit) -> int:
    """The exit code of a cell's ``raise SystemExit(...)`` / ``sys.exit(...)``.

    A message (``sys.exit("bad config")``) exits 1 and is printed on stderr as
    ``SystemExit: bad config``, which the runner takes as the job's error, as it does a
    traceback's last line for other exceptions (it was lost: the job said only "exited
    with code 1")."""
    code = exc.code
    if code is None or isinstance(code, int):
        return code or 0
    print(f"SystemExit: {code}", file=sys.stderr, flush=True)
    return 1


#: Seconds the nodes of a job wait for each other at rendezvous: Baseten starts them with
#: some skew (pulling the image, the cache), and its cookbook waits up to 20 minutes.
RDZV_TIMEOUT_S = 1200
#: NCCL settings of Baseten's multi-node cookbook, set only where the job has not set them:
#: bootstrap over the node network, not loopback or docker's bridge.
MULTINODE_NCCL_ENV = {"NCCL_SOCKET_IFNAME": "^docker0,lo"}


def _gpus_on_node() -> int:
    """GPUs this node has: the visible devices, else its NVIDIA device files, else
    ``$BT_NUM_GPUS`` (Baseten's count per node), else 1 (a CPU process)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible not in ("-1", "NoDevFiles"):
        return len([d for d in visible.split(",") if d.strip()])
    devices = [d for d in Path("/dev").glob("nvidia[0-9]*") if d.name[6:].isdigit()]
    if devices:
        return len(devices)
    return int(os.environ.get("BT_NUM_GPUS") or 0) or 1


def _torchrun(nproc: int | None) -> int:
    """Re-launch this runtime under torchrun across every node of the job: node ranks as
    Baseten numbers them (static rendezvous at the leader), one process per GPU of the
    node, and a rendezvous timeout long enough for nodes that start minutes apart."""
    per_node = nproc or _gpus_on_node()
    nodes = int(os.environ.get("BT_GROUP_SIZE") or 1)
    leader = os.environ.get("BT_LEADER_ADDR", "127.0.0.1")
    port = _rendezvous_port()
    timeout = os.environ.get("BT_RDZV_TIMEOUT_S") or str(RDZV_TIMEOUT_S)
    if nodes > 1 and leader not in ("127.0.0.1", "localhost"):
        for name, value in MULTINODE_NCCL_ENV.items():
            os.environ.setdefault(name, value)
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--node_rank={os.environ.get('BT_NODE_RANK', '0')}",
        f"--master_addr={leader}",
        f"--master_port={port}",
        f"--rdzv_conf=timeout={timeout}",
        f"--nproc_per_node={per_node}",
        "-m",
        "bt_jupyter.runtime",
    ]
    print(
        f"torchrun: {per_node} process(es) on node {os.environ.get('BT_NODE_RANK', '0')} "
        f"of {nodes}",
        flush=True,
    )
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bt_jupyter.runtime")
    parser.add_argument("--launcher", choices=["torchrun"])
    parser.add_argument("--nproc-per-node", type=int)
    parser.add_argument("--bundle", type=Path, default=Path(BUNDLE_DIR))
    parser.add_argument("--session", action="store_true", help="serve a live kernel")
    parser.add_argument("--idle-timeout", type=float, default=30 * 60)
    parser.add_argument("--init-distributed", action="store_true")
    parser.add_argument("--post-mortem", type=float, metavar="IDLE_S", help="keep a failure")
    args = parser.parse_args(argv)
    # One write per line (not per print() argument): lines of processes sharing a pipe,
    # such as torchrun's workers, then never interleave mid-line.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]
    if args.launcher == "torchrun":
        return _torchrun(args.nproc_per_node)
    sys.path.insert(0, str(Path.cwd()))
    if args.session:
        return run_session(args.bundle.resolve(), args.idle_timeout, args.init_distributed)
    return run_cell(args.bundle.resolve(), args.post_mortem)


if __name__ == "__main__":
    sys.exit(main())
