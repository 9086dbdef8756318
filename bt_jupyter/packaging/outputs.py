"""``--out`` names, checked before anything is sent: a name the cell cannot hand back is
found in the notebook in a millisecond, not after the whole training run."""

from __future__ import annotations

import ast
import builtins
import keyword
import math
import os

from bt_jupyter import limits
from bt_jupyter.errors import BtJupyterError, InvalidConfigError
from bt_jupyter.runtime import DEFAULT_FILES_MB

#: How many MB of the files a cell writes into its working folder the job keeps.
FILES_MB_ENV = "BT_JUPYTER_FILES_MB"


def files_mb() -> float:
    """The notebook's ``BT_JUPYTER_FILES_MB`` (default 1024), checked before sending."""
    raw = os.environ.get(FILES_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_FILES_MB
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 10_000_000:
        raise InvalidConfigError(
            f"{FILES_MB_ENV}={raw[:40]!r} is not a size in MB: set it to a number such as "
            f"{DEFAULT_FILES_MB} (0 keeps none of the files the cell writes)"
        )
    return value


def assigned_names(tree: ast.Module) -> set[str]:
    """Every name the module-level code of ``tree`` may bind: assignments (plain,
    augmented, annotated, walrus, ``for``/``with``/``except``/``match`` targets), imports,
    ``def`` and ``class``, and a name a function declares ``global``. What a function,
    a class body or a comprehension assigns is its own."""
    found: set[str] = set()
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    comprehensions = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        if isinstance(node, (*scopes, *comprehensions)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update((a.asname or a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            found.add(node.name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    for node in ast.walk(tree):  # `global x` in a function the cell calls
        if isinstance(node, ast.Global):
            found.update(node.names)
    return found


def check_outputs(names: tuple[str, ...], python_source: str, captured: set[str]) -> None:
    """Refuse a ``--out`` name that is not a Python name, or that the cell neither
    assigns nor takes from the notebook (``captured``: a model it trains in place comes
    back changed), such as a builtin (BtJupyterError naming it and the fix)."""
    if not names:
        return
    try:
        tree = ast.parse(python_source)
    except SyntaxError:
        return  # the cell's own syntax error is reported where the cell is compiled
    assigned = assigned_names(tree) | captured
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            shown = name if name.isprintable() and len(name) < 40 else limits.shown(name)
            raise BtJupyterError(
                f"--out {shown}: not a Python variable name (letters, digits and _, not "
                "starting with a digit); name variables the cell assigns, e.g. --out model"
            )
        if name not in assigned and hasattr(builtins, name):
            raise BtJupyterError(
                f"--out {name}: that is Python's builtin {name}, which the cell does not "
                "assign; name a variable the cell assigns"
            )
        if name not in assigned:
            listed = ", ".join(sorted(n for n in assigned if not n.startswith("_"))[:8])
            hint = f" (it has {listed})" if listed else ""
            raise BtJupyterError(
                f"--out {name}: the cell never assigns {name}, nor uses it from the "
                f"notebook{hint}; assign it in the cell, or leave it out of --out"
            )
