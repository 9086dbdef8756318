"""The files a push sends, gathered from a workspace as ``truss train push`` gathers them.

``Workspace.workspace_root`` (default: the pushed folder, which must lie inside it) goes
whole, less its top-level ``exclude_dirs``; each of ``external_dirs`` goes in under its
own name. Paths are relative to the pushed folder. Everything is checked first, with
Baseten's rules: an exclude must be a folder directly under the root, an external folder
must exist and not clash with a name at the root (one inside the root is skipped, with a
warning). Then the size: Baseten takes at most 5 GB, so a bigger workspace is refused
with its size and its biggest entries before anything is read or sent.

What never travels is as for ``--include``: ``.git``, ``__pycache__``, virtualenvs,
what ``.gitignore`` files exclude, and (as truss reads it) what a ``.truss_ignore`` at
the root excludes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pathspec

from bt_jupyter import limits
from bt_jupyter.errors import IncludeError
from bt_jupyter.packaging.files import included_files
from bt_jupyter.spec import Workspace

TRUSS_IGNORE = ".truss_ignore"


def _resolve(raw: str, base: Path) -> Path:
    path = Path(raw)
    return (path if path.is_absolute() else base / path).resolve()


def _excluded_names(excludes: Iterable[str], base: Path, root: Path) -> set[str]:
    names = set()
    for raw in excludes:
        path = _resolve(raw, base)
        if not path.is_relative_to(root):
            raise IncludeError(f"exclude_dirs: {raw!r} is {path}, not inside workspace_root {root}")
        parts = path.relative_to(root).parts
        if len(parts) != 1:
            raise IncludeError(
                f"exclude_dirs: {raw!r} is not directly under workspace_root {root}: only "
                "its top-level folders can be excluded (add deeper ones to a .gitignore)"
            )
        names.add(parts[0])
    return names


def _external(raws: Iterable[str], base: Path, root: Path, taken: set[str]) -> list[Path]:
    found = []
    for raw in raws:
        path = _resolve(raw, base)
        if path.is_relative_to(root):
            warnings.warn(
                f"external_dirs: {raw!r} is inside workspace_root {root}, which already "
                "sends it; skipped",
                UserWarning,
                stacklevel=4,
            )
            continue
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a folder"
            raise IncludeError(f"external_dirs: {raw!r} ({path}) {what}")
        if path.name in taken:
            raise IncludeError(
                f"external_dirs: {raw!r} would go in as {path.name!r}, a name the workspace "
                "already has: each external folder needs a name of its own"
            )
        taken.add(path.name)
        found.append(path)
    return found


def _truss_ignored(root: Path) -> pathspec.GitIgnoreSpec | None:
    """The root's ``.truss_ignore`` patterns (gitignore syntax, ``#`` comments)."""
    rules = root / TRUSS_IGNORE
    if not rules.is_file():
        return None
    lines = [ln.strip() for ln in rules.read_text().splitlines()]
    return pathspec.GitIgnoreSpec.from_lines([ln for ln in lines if ln and ln[0] != "#"])


def gather(source_dir: Path, workspace: Workspace | None) -> list[tuple[str, Path]]:
    """(path in the bundle, file) of what a push of ``source_dir`` sends; one clear
    :class:`IncludeError` for a workspace Baseten would refuse."""
    base = source_dir.resolve()
    workspace = workspace or Workspace()
    root = _resolve(workspace.workspace_root, base) if workspace.workspace_root else base
    if not base.is_relative_to(root):
        raise IncludeError(
            f"workspace_root {root} must hold the pushed folder {base} (it is sent whole)"
        )
    excluded = _excluded_names(workspace.exclude_dirs, base, root)
    tops = {p.name for p in root.iterdir() if p.name not in excluded}
    external = _external(workspace.external_dirs, base, root, tops)
    ignored = _truss_ignored(root)

    found = [
        (path, file)
        for path, file in included_files(["."], root, frozenset(excluded))
        if not (ignored and ignored.match_file(path))
    ]
    for folder in external:
        found += [(f"{folder.name}/{p}", f) for p, f in included_files(["."], folder)]
    check_size(found, "the workspace", "add them to exclude_dirs or a .gitignore")
    return found


def check_size(files: list[tuple[str, Path]], what: str, advice: str) -> None:
    """Refuse more than Baseten's 5 GB, naming the size and the biggest entries."""
    sizes = {path: file.stat().st_size for path, file in files}
    total = sum(sizes.values())
    if total <= limits.MAX_WORKSPACE_BYTES:
        return
    by_top: dict[str, int] = {}
    for path, size in sizes.items():
        top = path.split("/", 1)[0] + ("/" if "/" in path else "")
        by_top[top] = by_top.get(top, 0) + size
    biggest = sorted(by_top.items(), key=lambda item: -item[1])[:3]
    named = ", ".join(f"{name} ({_gb(size)})" for name, size in biggest)
    raise IncludeError(
        f"{what} is {_gb(total)}, over Baseten's {_gb(limits.MAX_WORKSPACE_BYTES)} limit; "
        f"biggest: {named}: {advice}"
    )


def _gb(size: int) -> str:
    """GB as truss counts them (2**30 bytes): Baseten's limit reads "5.00 GB"."""
    return f"{size / 2**30:.2f} GB"
