"""A cell and what it needs as one deterministic archive: the job's files.

Layout of the archive (what the job's working directory holds)::

    bt_bundle/manifest.json   captured names, requirements, Python, entry point, files
    bt_bundle/cell.py         the cell (IPython syntax turned into Python)
    bt_bundle/namespace.pkl   the names that travel by value
    bt_jupyter/install.py     installs requirements.txt (``python -m bt_jupyter.install``)
    bt_jupyter/runtime.py     the in-job runtime (``python -m bt_jupyter.runtime``)
    requirements.txt          pinned requirements of every import the job runs
    <local modules and --include files, at their import paths>

Entries are sorted with fixed times, owners and modes, so the same cell and state give
the same bytes and the same content hash; an unchanged bundle is never uploaded twice.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bt_jupyter import spec, trackers
from bt_jupyter.errors import CaptureError
from bt_jupyter.packaging import capture as capture_mod
from bt_jupyter.packaging import deps, files, imports, named_files
from bt_jupyter.packaging.outputs import check_outputs, files_mb
from bt_jupyter.packaging.workspace import check_size
from bt_jupyter.runtime import BUNDLE_DIR
from bt_jupyter.session_kernel import DEFAULT_IDLE_TIMEOUT_S

PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: The modules of bt_jupyter that travel in every bundle (standard library only).
IN_JOB_SOURCES = ("install.py", "runtime.py", "session_kernel.py", "trackers.py")
RUNTIME_INIT = '"""The part of bt_jupyter that runs inside a job (see runtime.py)."""\n'
INSTALL = "python -m bt_jupyter.install"
ENTRY = "python -m bt_jupyter.runtime"
MANIFEST = f"{BUNDLE_DIR}/manifest.json"


@dataclass(frozen=True)
class SessionMode:
    """A live session instead of a cell (``%bt_session start``): the job serves a kernel
    per node (bt_jupyter/session_kernel.py) until stopped or idle."""

    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    #: Join one torch.distributed group across the nodes before serving.
    init_distributed: bool = False


@dataclass(frozen=True)
class PackageOptions:
    """What the user adds to a cell: ``--pip``, ``--requirements``, ``--include``, ..."""

    pip: tuple[str, ...] = ()
    requirements_file: Path | None = None
    include: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    base_image: str | None = None
    #: The Python of a ``base_image`` bt_jupyter cannot tell (``--image-python``).
    image_python: str | None = None
    #: The job asks for GPUs: its torch must be able to use CUDA.
    gpu: bool = False
    launcher: str | None = None
    nproc_per_node: int | None = None
    max_value_bytes: int = capture_mod.DEFAULT_MAX_VALUE_BYTES
    notebook_dir: Path = field(default_factory=Path.cwd)
    #: How the job's tracebacks name the cell (``Cell In[5]``, as IPython does), and the
    #: notebook lines above its body (the ``%%bt_train`` line), so frames give the line
    #: numbers the notebook shows.
    cell_name: str = f"{BUNDLE_DIR}/cell.py"
    cell_header: tuple[str, ...] = ()
    #: The notebook names a sweep set for this run (their values are in ``values``).
    swept: tuple[str, ...] = ()
    #: The ``%%bt_train`` options as the user set them (``--gpu``: ``H100:8``), kept in
    #: the manifest so runs can be compared.
    options: tuple[tuple[str, str], ...] = ()
    session: SessionMode | None = None
    #: ``--interactive on_failure``: a failed cell's process serves its state to
    #: ``%bt_debug`` for this many idle seconds.
    post_mortem_s: float | None = None


Data = bytes | memoryview


@dataclass(frozen=True)
class Bundle:
    files: dict[str, Data]
    manifest: dict[str, Any]

    @cached_property
    def archive(self) -> bytes:
        """The deterministic tar: sorted entries, mtime 0, root-owned, fixed modes.

        Written block by block (header, data, padding) and joined once: one copy of
        large data, where ``tarfile`` would copy it in 16 KiB pieces.
        """
        parts: list[Data] = []
        # the manifest first: a reader streams the archive and stops after it
        for path in sorted(self.files, key=lambda p: (p != MANIFEST, p)):
            data = self.files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uname = info.gname = ""
            parts += [info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"), data]
            parts.append(b"\0" * (-len(data) % tarfile.BLOCKSIZE))
        size = sum(len(p) for p in parts) + 2 * tarfile.BLOCKSIZE
        parts.append(b"\0" * (2 * tarfile.BLOCKSIZE + (-size % tarfile.RECORDSIZE)))
        return b"".join(parts)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()

    @property
    def base_image(self) -> str:
        return str(self.manifest["base_image"])

    @property
    def requirements(self) -> list[str]:
        return list(self.manifest["requirements"])

    @property
    def start_commands(self) -> list[str]:
        """Install the requirements, then run the cell: all a bare image needs."""
        return [INSTALL, str(self.manifest["entry_point"])]

    def export(self, folder: Path) -> list[Path]:
        """Write the bundle's files into ``folder`` (for ``truss train push``)."""
        written = []
        for path, data in sorted(self.files.items()):
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append(target)
        return written


#: Metadata that makes the job's folder (first on its ``sys.path``) declare bt_jupyter's
#: entry points: how PyTorch Lightning finds the job's logger (see trackers.py).
JOB_DIST_INFO = "bt_jupyter_job-1.dist-info"


def in_job_files() -> dict[str, bytes]:
    """What of bt_jupyter travels with every cell: the in-job modules and the entry
    points the training libraries look for."""
    points = "".join(
        f"[{group}]\nbt_jupyter = {target}\n\n"
        for group, target in trackers.LIGHTNING_ENTRY_POINTS.items()
    )
    return {
        "bt_jupyter/__init__.py": RUNTIME_INIT.encode(),
        **{f"bt_jupyter/{f}": (PACKAGE_DIR / f).read_bytes() for f in IN_JOB_SOURCES},
        f"{JOB_DIST_INFO}/METADATA": b"Metadata-Version: 2.1\nName: bt-jupyter-job\nVersion: 1\n",
        f"{JOB_DIST_INFO}/entry_points.txt": points.encode(),
    }


def runs_bundle(project: spec.TrainingProject, bundle: Bundle) -> spec.TrainingProject:
    """``project`` with its job running ``bundle``: the bundle's image and start commands
    (install the requirements, run the cell), the rest of the job as configured."""
    runtime = project.job.runtime.model_copy(update={"start_commands": bundle.start_commands})
    image = spec.Image(base_image=bundle.base_image)
    return project.model_copy(
        update={"job": project.job.model_copy(update={"image": image, "runtime": runtime})}
    )


def package_cell(source: str, namespace: dict[str, Any], options: PackageOptions) -> Bundle:
    """Turn a cell and the notebook state it reads into a Bundle (or raise a clear error)."""
    python_source = plain_python(source)
    captured = capture_mod.capture(
        python_source, namespace, max_value_bytes=options.max_value_bytes
    )
    check_outputs(options.outputs, python_source, {c.name for c in captured.names})
    imported = [
        *imports.in_source(python_source, "the cell"),
        *captured.code_imports,
        *(imports.ImportedModule(m, False, "the notebook state") for m in captured.modules),
    ]
    if options.launcher == "torchrun":  # torchrun itself comes with torch
        imported.append(imports.ImportedModule("torch", False, "--launcher torchrun"))
    if options.session is not None or options.post_mortem_s:  # the node's kernel
        imported.append(imports.ImportedModule("ipykernel", False, "%bt_session"))
        if options.session is not None and options.session.init_distributed:
            imported.append(imports.ImportedModule("torch", False, "--init-distributed"))
    local, bundle_files = _local_code(imported)
    included = list(files.included_files(options.include, options.notebook_dir))
    check_size(included, "what --include sends", "leave big files out with a .gitignore, or "
               "have the job fetch them (--weights, or from storage)")  # fmt: skip
    for path, file in included:
        bundle_files[path] = file.read_bytes()
    functions = {
        c.name: value
        for c in captured.names
        if isinstance(value := namespace.get(c.name), types.FunctionType)
    }
    named = named_files.find(
        python_source, _first_line(source, python_source, options), functions,
        options.notebook_dir, frozenset(bundle_files), named_files.max_bytes(),
    )  # fmt: skip
    for found in named.sent:
        for path, file in files.included_files([found.path], options.notebook_dir):
            bundle_files.setdefault(path, file.read_bytes())
    explicit = (
        deps.read_requirements_file(options.requirements_file) if options.requirements_file else []
    )
    pip = options.pip
    if options.session is not None:
        pip = tuple(deps.pin_bare(r) for r in pip)
    detected = deps.requirements_for(imported, local, [*explicit, *pip])
    requirements = deps.merge(
        ("detected", detected),
        (str(options.requirements_file or "--requirements"), explicit),
        ("--pip", pip),
    )
    base_image = options.base_image or deps.default_base_image(requirements)
    requirements = deps.check_image(base_image, requirements, options.gpu, options.image_python)
    entry = ENTRY
    if options.launcher == "torchrun":
        entry += " --launcher torchrun"
        if options.nproc_per_node:
            entry += f" --nproc-per-node {options.nproc_per_node}"
    if options.session is not None:
        entry += f" --session --idle-timeout {options.session.idle_timeout_s:g}"
        if options.session.init_distributed:
            entry += " --init-distributed"
    if options.post_mortem_s:
        entry += f" --post-mortem {options.post_mortem_s:g}"
    listed = [
        {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for path, data in sorted(bundle_files.items())
    ]
    manifest: dict[str, Any] = {
        "format": 1,
        "python": deps.PYTHON,
        "entry_point": entry,
        "base_image": base_image,
        "captured": [vars(c) for c in captured.names],
        "imports": captured.imports,
        "requirements": requirements,
        "local_modules": sorted(local),
        "files": listed,
        "outputs": list(options.outputs),
        "files_mb": files_mb(),
        "named_files": [vars(f) for f in named.sent],
        "not_sent": named_files.advice(named),
        "buffers": len(captured.buffers),
        "values": captured.shown,
        "swept": list(options.swept),
        "options": dict(options.options),
        **_traceback_sources(source, python_source, captured, options),
    }
    if options.session is not None:
        manifest["session"] = vars(options.session)
    if options.post_mortem_s:
        manifest["post_mortem"] = {"idle_timeout_s": options.post_mortem_s}
    bundle_files.update(
        {
            MANIFEST: json.dumps(manifest, indent=1, sort_keys=True).encode(),
            f"{BUNDLE_DIR}/cell.py": python_source.encode(),
            f"{BUNDLE_DIR}/namespace.pkl": captured.payload,
            **{f"{BUNDLE_DIR}/buffers/{i}.bin": b for i, b in enumerate(captured.buffers)},
            **in_job_files(),
            "requirements.txt": "".join(f"{r}\n" for r in requirements).encode(),
        }
    )
    return Bundle(files=bundle_files, manifest=manifest)


def _traceback_sources(
    source: str, python_source: str, captured: capture_mod.Capture, options: PackageOptions
) -> dict[str, Any]:
    """What the job needs to show notebook names, lines and source in its tracebacks: the
    cell's name and the notebook line of cell.py's first line, the cell of each captured
    function or class, and those cells' text (registered in the job's ``linecache``)."""
    name = options.cell_name
    if name in captured.sources:  # the same label for two cells: keep them apart
        name = f"{name} (%%bt_train)"
    header = "".join(f"{line}\n" for line in options.cell_header)
    return {
        "cell": {"name": name, "first_line": _first_line(source, python_source, options)},
        "code_files": dict(sorted(captured.code_files.items())),
        "sources": {**dict(sorted(captured.sources.items())), name: header + source},
    }


def _first_line(source: str, python_source: str, options: PackageOptions) -> int:
    """The notebook cell's line of cell.py's line 1: after the ``%%bt_train`` line, and
    after the leading blank lines IPython drops."""
    dropped = max(0, len(source.splitlines()) - len(python_source.splitlines()))
    return len(options.cell_header) + dropped + 1


def _local_code(imported: list[imports.ImportedModule]) -> tuple[dict[str, Path], dict[str, Data]]:
    """Local modules the job imports, followed through their own imports, and their files.

    ``imported`` grows by the imports found in the local modules' source.
    """
    local: dict[str, Path] = {}
    bundle_files: dict[str, Data] = {}
    checked: set[str] = set()
    pending = {m.top for m in imported}
    while pending - checked:
        found = files.local_modules(pending - checked)
        checked |= pending
        for name, root in found.items():
            local[name] = root
            for path, file in files.local_module_files(name, root):
                data = bundle_files[path] = file.read_bytes()
                if not path.endswith(".py"):
                    continue
                try:
                    more = imports.in_source(data.decode("utf-8", "replace"), path)
                except SyntaxError as exc:
                    raise CaptureError(
                        f"local module {path} is not valid Python: line {exc.lineno}: {exc.msg}"
                    ) from None
                imported.extend(more)
                pending |= {m.top for m in more}
    return local, bundle_files


def plain_python(source: str) -> str:
    """The cell as Python; IPython syntax (``%magic``, ``!cmd``) cannot run in a job."""
    from IPython.core.inputtransformer2 import TransformerManager

    python = str(TransformerManager().transform_cell(source))  # type: ignore[no-untyped-call]
    lines = zip(source.splitlines(), python.splitlines(), strict=False)
    for number, (before, after) in enumerate(lines, 1):
        if "get_ipython()" in after and "get_ipython()" not in before:
            word = before.strip().split()[0] if before.strip() else before
            hint = "; for `!pip install`, use --pip" if word.startswith("!") else ""
            raise CaptureError(
                f"line {number}: `{word}` is IPython syntax, which does not run inside a job; "
                f"remove it from the cell{hint}"
            )
    return python


def describe(bundle: Bundle) -> Iterable[str]:
    """Human-readable lines of the manifest (for ``--dry-run``)."""
    m = bundle.manifest
    yield f"bundle {bundle.sha256[:12]}  {len(bundle.archive):,} bytes  Python {m['python']}"
    yield f"image     {m['base_image']}"
    for command in bundle.start_commands:
        yield f"command   {command}"
    for c in m["captured"]:
        if c["kind"] == "import":
            detail = c["source"]
        elif c["kind"] == "value":
            detail = f"{c['type']}, {c['size']:,} bytes pickled"
        else:
            detail = "defined in the notebook, sent by value"
        yield f"captured  {c['name']:<20} {c['kind']:<8} {detail}"
    for r in m["requirements"]:
        yield f"requires  {r}"
    named = {f["path"]: f["where"] for f in m.get("named_files", [])}
    for f in m["files"]:
        top = next((n for n in named if f["path"] == n or f["path"].startswith(f"{n}/")), None)
        why = f"  included because {named[top]}" if top else ""
        yield f"file      {f['path']}  ({f['size']:,} bytes){why}"
    yield from m.get("not_sent", [])
