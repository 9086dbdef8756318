"""Every import a job will execute: in the cell, in notebook code, in local modules.

The job's requirements come from these, not only from the names the cell reads from the
notebook: ``import torch`` written inside the cell (or inside a function the cell
calls) needs torch on the node as much as a captured ``torch`` does. An import guarded
by ``try: ... except ImportError`` is optional; one under ``if TYPE_CHECKING:`` never
runs. Relative imports belong to local code, which travels as source.
"""

from __future__ import annotations

import ast
import dis
import inspect
import textwrap
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: Exceptions whose handler makes the imports of its ``try`` body optional.
_OPTIONAL_WHEN_CAUGHT = frozenset(
    {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
)


@dataclass(frozen=True)
class ImportedModule:
    """One absolute import: the dotted module, whether it may fail, and where it is."""

    name: str
    optional: bool
    where: str

    @property
    def top(self) -> str:
        return self.name.split(".")[0]


def in_source(source: str, where: str) -> list[ImportedModule]:
    """The absolute imports in Python ``source`` (which must parse)."""
    finder = _Finder(where)
    finder.visit(ast.parse(source))
    return finder.found


def in_objects(objects: Iterable[tuple[str, Any]]) -> list[ImportedModule]:
    """Imports inside notebook functions and classes (``(name, object)`` pairs)."""
    found: list[ImportedModule] = []
    for name, obj in objects:
        where = f"{'class' if isinstance(obj, type) else 'function'} {name}"
        found += _in_object(obj, where)
    return found


def _in_object(obj: Any, where: str) -> list[ImportedModule]:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        return in_source(source, where)
    except (OSError, TypeError, SyntaxError, IndentationError):
        pass  # no source (e.g. defined by exec): read the bytecode instead
    codes: list[types.CodeType] = []
    if isinstance(obj, types.FunctionType):
        codes.append(obj.__code__)
    elif isinstance(obj, type):
        for member in vars(obj).values():
            target = getattr(member, "__func__", member)
            if isinstance(target, types.FunctionType):
                codes.append(target.__code__)
    return [ImportedModule(name, False, where) for code in codes for name in _code_imports(code)]


def _code_imports(code: types.CodeType) -> Iterator[str]:
    level: object = 0
    for instruction in dis.get_instructions(code):
        if instruction.opname == "LOAD_CONST":
            level = instruction.argval
        elif instruction.opname == "IMPORT_NAME" and level == 0 and instruction.argval:
            yield str(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_imports(const)


class _Finder(ast.NodeVisitor):
    def __init__(self, where: str) -> None:
        self.where = where
        self.found: list[ImportedModule] = []
        self._optional = 0

    def _add(self, name: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", None)
        where = f"{self.where}, line {line}" if line else self.where
        self.found.append(ImportedModule(name, self._optional > 0, where))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0] if node.args else None
        if (
            called in ("import_module", "__import__")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and not first.value.startswith(".")
        ):
            self._add(first.value, node)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
        if name == "TYPE_CHECKING":
            for statement in node.orelse:
                self.visit(statement)
            return  # the body only runs for type checkers
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_catches_import_error(h) for h in node.handlers)
        self._optional += guarded
        for statement in node.body:
            self.visit(statement)
        self._optional -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for kind in kinds:
        name = kind.attr if isinstance(kind, ast.Attribute) else getattr(kind, "id", "")
        if name in _OPTIONAL_WHEN_CAUGHT:
            return True
    return False
