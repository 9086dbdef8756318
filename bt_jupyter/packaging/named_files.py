"""Files the cell names travel with it.

A tutorial reads its data next to the notebook (``load_dataset("json",
data_files="capybara.jsonl")``, ``open("data.jsonl")``, ``from_pretrained("./tiny-model")``):
each string literal of the cell, and of the notebook functions it calls, that names an
existing file or folder under the notebook's folder is sent with the cell, up to a size
cap; one over it is named before anything is submitted, with where to put it instead.
"""

from __future__ import annotations

import ast
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bt_jupyter.packaging.files import NEVER

#: What the literals may send in all (``BT_JUPYTER_NAMED_FILES_MB`` changes it).
DEFAULT_MAX_BYTES = 100_000_000
MAX_MB_ENV = "BT_JUPYTER_NAMED_FILES_MB"
#: A literal longer than this is text, not a path.
_MAX_PATH_CHARS = 255


@dataclass(frozen=True)
class NamedFile:
    """A file or folder a literal names: the literal, where it is, and its size."""

    path: str
    where: str
    size: int


@dataclass(frozen=True)
class NamedFiles:
    sent: tuple[NamedFile, ...]
    too_big: tuple[NamedFile, ...]
    max_bytes: int


def max_bytes() -> int:
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    try:
        return max(0, int(float(raw) * 1_000_000)) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


def _cell_literals(python_source: str, first_line: int) -> Iterator[tuple[str, str]]:
    try:
        tree = ast.parse(python_source)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, f"line {node.lineno + first_line - 1} names it"


def _code_literals(code: types.CodeType, owner: str) -> Iterator[tuple[str, str]]:
    for const in code.co_consts:
        if isinstance(const, str):
            yield const, f"notebook function {owner} names it"
        elif isinstance(const, types.CodeType):
            yield from _code_literals(const, owner)


def _candidate(text: str, base: Path) -> Path | None:
    """The file or folder under ``base`` that ``text`` names, if it plainly names one."""
    text = text.strip()
    if (
        not text
        or len(text) > _MAX_PATH_CHARS
        or any(c in text for c in "\n\r\0*?")
        or "://" in text
        or text.startswith(("-", "~"))
        or os.path.isabs(text)
    ):
        return None
    parts = Path(text).parts
    if any(p in NEVER or (p.startswith(".") and p not in (".", "..")) for p in parts):
        return None
    root = base.resolve()
    try:
        path = (base / text).resolve()
    except (OSError, RuntimeError):
        return None
    if path == root or not path.is_relative_to(root) or not path.exists():
        return None
    return path


def _size(path: Path, cap: int) -> int:
    """Bytes under ``path`` (stops counting a little past ``cap``)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if d not in NEVER]
        for name in names:
            try:
                total += (Path(folder) / name).stat().st_size
            except OSError:
                continue
            if total > cap:
                return total
    return total


def find(
    python_source: str,
    first_line: int,
    functions: dict[str, types.FunctionType],
    base: Path,
    skip: frozenset[str],
    cap: int,
) -> NamedFiles:
    """The files and folders the cell's literals (and its notebook functions') name under
    ``base``, in the order named; ``skip`` holds bundle paths already sent."""
    literals = [*_cell_literals(python_source, first_line)]
    for name, function in sorted(functions.items()):
        literals += _code_literals(function.__code__, name)
    root = base.resolve()
    seen: set[Path] = set()
    sent: list[NamedFile] = []
    too_big: list[NamedFile] = []
    total = 0
    for text, where in literals:
        path = _candidate(text, base)
        if path is None or path in seen:
            continue
        seen.add(path)
        relative = path.relative_to(root).as_posix()
        if relative in skip:
            continue
        size = _size(path, cap)
        found = NamedFile(relative, where, size)
        if total + size > cap:
            too_big.append(found)
        else:
            total += size
            sent.append(found)
    return NamedFiles(tuple(sent), tuple(too_big), cap)


def advice(named: NamedFiles) -> list[str]:
    """One line per file left behind: what it is and where to put it instead."""
    cap_mb = named.max_bytes / 1e6
    return [
        f"not sent: {f.path} ({f.size / 1e6:,.1f} MB; {f.where}) would take what the cell "
        f"sends over {cap_mb:,.0f} MB ({MAX_MB_ENV}); send it with --include {f.path}, "
        "put it in the project cache (--cache), or mount it with --weights"
        for f in named.too_big
    ]
