"""Local code and ``--include`` files that travel with a cell as source.

A module the cell needs that is neither in the standard library nor installed in
site-packages (a helper file next to the notebook, an editable install) is local code:
its source goes into the bundle, at the path it is imported from. ``--include PATH``
adds files and folders, honouring ``.gitignore`` files; ``.git``, ``__pycache__``,
virtualenvs and checkpoint folders never travel.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

import pathspec

from bt_jupyter.errors import (
    IncludeError,
)

NEVER = frozenset(
    {
        ".git",
        "__pycache__",
        ".ipynb_checkpoints",
        ".venv",
        "venv",
        "checkpoints",
        ".mypy_cache",
        ".pytest_cache",
    }
)


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return [Path(r).resolve() for r in roots]


def local_modules(modules: Iterable[str], skip: Iterable[str] = ("bt_jupyter",)) -> dict[str, Path]:
    """Top-level modules whose code is local, with the folder they are imported from."""
    installed = _installed_roots()
    found: dict[str, Path] = {}
    for name in sorted(set(modules) - set(skip)):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None) if module else module_origin(name)
        if not file or not Path(file).is_file():  # built-in, frozen, namespace package
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(root) for root in installed):
            continue
        is_package = path.name == "__init__.py"
        found[name] = path.parent.parent if is_package else path.parent
    return found


def module_origin(name: str) -> str | None:
    """Where module ``name`` would load from (found, not executed), or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return spec.origin or ", ".join(spec.submodule_search_locations or []) or name


def local_module_files(name: str, root: Path) -> Iterator[tuple[str, Path]]:
    """(path in the bundle, file) for module ``name`` imported from ``root``."""
    package = root / name
    if package.is_dir():
        yield from _walk(package, root)
    else:
        yield f"{name}.py", root / f"{name}.py"


def included_files(
    paths: Iterable[str], base: Path, skip_top: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Path]]:
    """(path in the bundle, file) for each ``--include`` path, relative to ``base``;
    ``skip_top`` names entries of an included folder's top level that stay out."""
    for raw in paths:
        path = (base / raw).resolve()
        if not path.exists():
            raise IncludeError(f"--include {raw}: no such file or folder (looked in {base})")
        anchor = base.resolve() if path.is_relative_to(base.resolve()) else path.parent
        if path.is_file():
            yield path.relative_to(anchor).as_posix(), path
        else:
            yield from _walk(path, anchor, skip_top)


def _walk(
    folder: Path, anchor: Path, skip_top: frozenset[str] = frozenset()
) -> Iterator[tuple[str, Path]]:
    ignores: list[tuple[Path, pathspec.GitIgnoreSpec]] = []
    for directory, subdirs, files in _sorted_walk(folder):
        gitignore = directory / ".gitignore"
        if gitignore.is_file():
            lines = gitignore.read_text().splitlines()
            ignores.append((directory, pathspec.GitIgnoreSpec.from_lines(lines)))
        skip = skip_top if directory == folder else frozenset()
        subdirs[:] = [
            d
            for d in subdirs
            if d not in NEVER
            and d not in skip
            and not d.startswith("checkpoint-")
            and not (directory / d / "pyvenv.cfg").exists()
            and not _ignored(directory / d, ignores, is_dir=True)
        ]
        for name in files:
            path = directory / name
            if name in skip or name.endswith((".pyc", ".pyo")) or _ignored(path, ignores, False):
                continue
            yield path.relative_to(anchor).as_posix(), path


def _sorted_walk(folder: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        yield Path(directory), subdirs, sorted(files)


def _ignored(path: Path, ignores: list[tuple[Path, pathspec.GitIgnoreSpec]], is_dir: bool) -> bool:
    for root, spec in ignores:
        if path.is_relative_to(root):
            relative = path.relative_to(root).as_posix() + ("/" if is_dir else "")
            if spec.match_file(relative):
                return True
    return False
