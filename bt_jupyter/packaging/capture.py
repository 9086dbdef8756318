"""Which notebook state a cell needs, and how each piece travels to the job.

The cell's free names are found with the AST (a name the cell assigns before reading it
is not captured), then followed into the notebook functions and classes it uses. Each
name then travels one way:

- modules, and functions or classes importable from an installed module: as an import;
- functions and classes defined in the notebook: by value (cloudpickle), so they keep
  working without the notebook;
- everything else (numbers, configs, arrays, data frames, models): pickled.

What cannot travel (open files, sockets, locks, threads, generators, database
connections, CUDA tensors) or is too large fails here, with one message naming the
variable, its type and what to do instead, before anything is submitted.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import io
import linecache
import pickletools
import re
import socket
import sqlite3
import symtable
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from bt_jupyter.errors import (
    CaptureError,
)
from bt_jupyter.packaging import imports as imports_mod

DEFAULT_MAX_VALUE_BYTES = 100 * 1000 * 1000
_BUILTINS = frozenset(dir(builtins))
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___"})


@dataclass(frozen=True)
class CapturedName:
    """One captured name as the manifest lists it."""

    name: str
    kind: str  # "import" | "function" | "class" | "value"
    type: str
    size: int = 0
    source: str = ""  # the import statement, for kind == "import"


@dataclass
class Capture:
    names: list[CapturedName]
    imports: list[str]
    payload: bytes
    #: Large binary data (array contents) kept out of the pickle: no copy, no scan.
    buffers: list[memoryview]
    #: Top-level modules the job must be able to import (imports and unpickling).
    modules: set[str] = field(default_factory=set)
    #: Imports inside the notebook functions and classes that travel by value.
    code_imports: list[imports_mod.ImportedModule] = field(default_factory=list)
    #: The notebook cell (readable name, e.g. "Cell In[3]") each captured function or class
    #: was defined in: cloudpickle drops code filenames, the job's tracebacks put them back.
    code_files: dict[str, str] = field(default_factory=dict)
    #: The source of those cells, by readable name, for the job's ``linecache``.
    sources: dict[str, str] = field(default_factory=dict)
    #: Short readable values (``lr``: ``0.0003``) to tell runs apart when comparing them.
    shown: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- names


def names_read(source: str) -> list[str]:
    """Names the cell reads before (or without) assigning them, in first-use order."""
    tree = ast.parse(source)
    reader = _Reader()
    assigned: set[str] = set()
    reader.block(tree.body, assigned)  # fills ``assigned`` with the cell's top-level names
    for name in _nested_globals(source):
        if name not in assigned:
            reader.found.setdefault(name)
    return list(reader.found)


class _Reader:
    """Walks statements in execution order: a read counts unless the name is bound first.

    Names bound inside a branch or loop body count as bound only within it, so a name
    that a cell might not assign is still captured.
    """

    def __init__(self) -> None:
        self.found: dict[str, None] = {}

    def block(self, statements: list[ast.stmt], bound: set[str]) -> None:
        for statement in statements:
            self.statement(statement, bound)

    def read(self, node: ast.AST | None, bound: set[str]) -> None:
        if node is None:
            return
        for name in _loads(node):
            if name not in bound:
                self.found.setdefault(name)

    def statement(self, node: ast.stmt, bound: set[str]) -> None:
        if isinstance(node, ast.For | ast.AsyncFor):
            self.read(node.iter, bound)
            inner = bound | _targets(node.target)
            self.block(node.body, inner)
            self.block(node.orelse, set(bound))
        elif isinstance(node, ast.While | ast.If):
            self.read(node.test, bound)
            self.block(node.body, set(bound))
            self.block(node.orelse, set(bound))
        elif isinstance(node, ast.With | ast.AsyncWith):
            inner = set(bound)
            for item in node.items:
                self.read(item.context_expr, inner)
                if item.optional_vars is not None:
                    inner |= _targets(item.optional_vars)
            self.block(node.body, inner)
        elif isinstance(node, _TRY):
            self.block(node.body, set(bound))
            for handler in node.handlers:
                self.read(handler.type, bound)
                self.block(handler.body, bound | ({handler.name} if handler.name else set()))
            self.block(node.orelse, set(bound))
            self.block(node.finalbody, set(bound))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            self.read(node.value, bound)
            if isinstance(node, ast.AnnAssign):
                self.read(node.annotation, bound)
            bound |= _stores(node)
        else:
            self.read(node, bound)
            bound |= _stores(node)


_TRY = (ast.Try, getattr(ast, "TryStar", ast.Try))  # TryStar: Python 3.11+


def _targets(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _loads(node: ast.AST) -> Iterator[str]:
    """Reads in one statement or expression (nested scopes are handled by symtable)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = node.args
        for default in [*args.defaults, *[d for d in args.kw_defaults if d is not None]]:
            yield from _loads(default)
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                yield from _loads(decorator)
        return
    if isinstance(node, ast.ClassDef):
        for part in [*node.bases, *[k.value for k in node.keywords], *node.decorator_list]:
            yield from _loads(part)
        return
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        yield from _loads(node.generators[0].iter)
        return
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        yield node.id
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        yield node.target.id
    for child in ast.iter_child_nodes(node):
        yield from _loads(child)


def _stores(statement: ast.stmt) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def _nested_globals(source: str) -> Iterator[str]:
    """Global names read inside functions, classes, lambdas and comprehensions."""
    top = symtable.symtable(source, "<cell>", "exec")
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        for symbol in table.get_symbols():
            if symbol.is_referenced() and symbol.is_global():
                yield symbol.get_name()


def _code_globals(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_globals(const)


def _referenced(obj: Any) -> Iterator[str]:
    """Globals a notebook function or class uses."""
    if isinstance(obj, types.FunctionType):
        yield from _code_globals(obj.__code__)
    elif isinstance(obj, type):
        for member in vars(obj).values():
            target = getattr(member, "__func__", member)
            if isinstance(target, property):
                for accessor in (target.fget, target.fset, target.fdel):
                    if accessor is not None:
                        yield from _referenced(accessor)
            elif isinstance(target, types.FunctionType):
                yield from _referenced(target)


# --------------------------------------------------------------------------- classify


def _in_notebook(obj: Any) -> bool:
    return getattr(obj, "__module__", None) == "__main__"


def _import_for(name: str, obj: Any) -> str | None:
    """The import statement that rebinds ``name`` to ``obj`` in the job, if there is one."""
    if isinstance(obj, types.ModuleType):
        if obj.__name__ == name:
            return f"import {name}"
        return f"import {obj.__name__} as {name}"
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "." in qualname or "<" in qualname:
        return None
    try:
        if getattr(importlib.import_module(module), qualname) is not obj:
            return None
    except (ImportError, AttributeError):
        return None
    return f"from {module} import {qualname}" + (f" as {name}" if name != qualname else "")


_ADVICE = "create it inside the cell instead"


def _cannot_travel(obj: Any) -> str | None:
    """Why ``obj`` cannot be sent to another machine (None if it can)."""
    if isinstance(obj, io.IOBase):
        return (
            "an open file or stream: open it inside the cell instead, "
            "or put the data in the cache dir"
        )
    if isinstance(obj, socket.socket):
        return f"a network socket: {_ADVICE}"
    if isinstance(obj, type(threading.Lock()) | type(threading.RLock())):
        return f"a lock: {_ADVICE}"
    if isinstance(obj, threading.Thread):
        return "a thread: start it inside the cell instead"
    if isinstance(obj, types.GeneratorType | types.AsyncGeneratorType | types.CoroutineType):
        return "a generator or coroutine: build it inside the cell, or turn it into a list"
    if isinstance(obj, sqlite3.Connection | sqlite3.Cursor):
        return "a database connection: connect inside the cell instead"
    if _on_cuda(obj):
        return "on a CUDA device: move it to the CPU first (`.cpu()`), or build it inside the cell"
    return None


def _on_cuda(obj: Any) -> bool:
    if getattr(obj, "is_cuda", False) is True:
        return True
    parameters = getattr(obj, "parameters", None)
    if callable(parameters) and type(obj).__module__.startswith("torch"):
        try:
            return any(getattr(p, "is_cuda", False) for p in parameters())
        except Exception:
            return False
    return False


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# --------------------------------------------------------------------------- capture


def capture(
    source: str, namespace: dict[str, Any], *, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
) -> Capture:
    """Capture what ``source`` needs from ``namespace`` (the notebook's user namespace)."""
    try:
        wanted = names_read(source)
    except SyntaxError as exc:
        raise CaptureError(f"the cell is not valid Python: line {exc.lineno}: {exc.msg}") from None
    by_value: dict[str, Any] = {}
    imports: dict[str, str] = {}
    names: dict[str, CapturedName] = {}
    shown: dict[str, str] = {}
    queue = [n for n in wanted if n in namespace]
    seen: set[str] = set()
    while queue:
        name = queue.pop(0)
        if name in seen or name in _IPYTHON_NAMES or name.startswith("_i"):
            continue
        seen.add(name)
        obj = namespace[name]
        statement = _import_for(name, obj)
        if statement is not None:
            imports[name] = statement
            names[name] = CapturedName(name, "import", _type_name(obj), source=statement)
            continue
        if _in_notebook(obj) and isinstance(obj, types.FunctionType | type):
            by_value[name] = obj
            kind = "class" if isinstance(obj, type) else "function"
            names[name] = CapturedName(name, kind, _type_name(obj))
            queue.extend(n for n in _referenced(obj) if n in namespace and n not in seen)
            continue
        reason = _cannot_travel(obj)
        if reason is not None:
            raise CaptureError(
                f"cannot send `{name}` ({_type_name(obj)}) to the job: it is {reason}"
            )
        by_value[name] = obj
        names[name] = CapturedName(name, "value", _type_name(obj))
        if (text := shown_value(name, obj)) is not None:
            shown[name] = text
    sizes = _value_sizes(by_value, names, max_value_bytes)
    payload, buffers = _pickle(by_value)
    for name, size in sizes.items():
        names[name] = CapturedName(name, names[name].kind, names[name].type, size)
    modules = {s.split()[1].split(".")[0] for s in imports.values()}
    modules |= pickled_modules(payload)
    ordered = [names[n] for n in sorted(names)]
    code = [(n, o) for n, o in by_value.items() if names[n].kind in ("function", "class")]
    code_files, sources = _code_sources(code)
    return Capture(
        names=ordered,
        imports=[imports[n] for n in sorted(imports)],
        payload=payload,
        buffers=buffers,
        modules=modules,
        code_imports=imports_mod.in_objects(code),
        code_files=code_files,
        sources=sources,
        shown=dict(sorted(shown.items())),
    )


#: At most this long, a captured value is shown when runs are compared.
MAX_SHOWN_CHARS = 60
#: Names whose values are never shown (compare tables, widget state): likely secrets.
_SECRET_NAME = re.compile(r"token|secret|passw|key|credential|auth", re.IGNORECASE)
#: Values that look like a key whatever their name: Hugging Face, OpenAI, GitHub, AWS,
#: Slack, GitLab tokens and JWTs.
_SECRET_VALUE = re.compile(r"^(hf_|sk-|sk_|ghp_|gho_|github_pat_|AKIA|ASIA|xox[abp]-|glpat-|eyJ)")


def shown_value(name: str, value: Any) -> str | None:
    """A short repr of a plain value (number, short string, bool, None, small tuple of
    those), or None: a value that is big, opaque or named like a secret is not shown."""
    if _SECRET_NAME.search(name):
        return None
    plain = (bool, int, float, str, type(None))
    item = getattr(value, "item", None)  # a numpy / torch scalar
    if not isinstance(value, plain) and callable(item) and getattr(value, "ndim", 1) == 0:
        value = item()
    if isinstance(value, (tuple, list)) and len(value) <= 8:
        if not all(isinstance(v, plain) for v in value):
            return None
    elif not isinstance(value, plain):
        return None
    texts = value if isinstance(value, (tuple, list)) else [value]
    if any(isinstance(v, str) and _SECRET_VALUE.match(v) for v in texts):
        return None
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else None


def _code_filename(obj: Any) -> str | None:
    """The file (an IPython cell's pseudo-file) a notebook function or class was compiled in."""
    if isinstance(obj, types.FunctionType):
        return obj.__code__.co_filename
    for member in vars(obj).values():
        target = getattr(member, "__func__", member)
        if isinstance(target, property):
            target = target.fget
        if isinstance(target, types.FunctionType):
            return target.__code__.co_filename
    return None


def cell_label(filename: str) -> str:
    """How the notebook names a cell's pseudo-file: ``Cell In[3]`` (IPython's own label in
    its tracebacks), else the filename itself."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return filename
    shell = get_ipython()
    named = shell.compile.format_code_name(filename) if shell is not None else None
    return " ".join(named) if named else filename


def _code_sources(code: list[tuple[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """For each notebook function or class: the readable name of its cell, and that cell's
    source (from the ``linecache`` IPython fills), so the job's tracebacks show both."""
    code_files: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, obj in code:
        filename = _code_filename(obj)
        if filename is None:
            continue
        label = code_files[name] = cell_label(filename)
        lines = linecache.getlines(filename)
        if lines:
            sources[label] = "".join(lines)
    return code_files, sources


def _value_sizes(
    by_value: dict[str, Any], names: dict[str, CapturedName], limit: int
) -> dict[str, int]:
    """Pickle each value alone: its size for the manifest, and a clear error if it fails."""
    sizes: dict[str, int] = {}
    for name, obj in by_value.items():
        if names[name].kind != "value":
            continue
        try:
            size = _pickled_size(obj)
        except Exception as exc:
            raise CaptureError(
                f"cannot send `{name}` ({_type_name(obj)}) to the job: pickling failed "
                f"({type(exc).__name__}: {exc}); {_ADVICE}"
            ) from None
        if size > limit:
            raise CaptureError(
                f"`{name}` ({_type_name(obj)}) is {_size(size)} pickled, over the "
                f"{_size(limit)} limit: load it inside the job from the cache dir "
                "($BT_PROJECT_CACHE_DIR), ship its file with --include PATH, or raise the "
                "limit (%config BtMagics.max_value_mb)"
            )
        sizes[name] = size
    return sizes


def _pickled_size(obj: Any) -> int:
    """Bytes ``obj`` takes pickled, counting out-of-band data without copying it."""
    out_of_band: list[int] = []
    pickled = cloudpickle.dumps(
        obj, protocol=5, buffer_callback=lambda b: out_of_band.append(b.raw().nbytes)
    )
    return len(pickled) + sum(out_of_band)


def _pickle(by_value: dict[str, Any]) -> tuple[bytes, list[memoryview]]:
    """One pickle for every by-value name, so notebook functions share one globals dict.

    Large contiguous data (numpy arrays, tensors) goes out of band (pickle protocol 5):
    the pickle stays small and the data is never copied or scanned.
    """
    buffers: list[memoryview] = []
    try:
        payload: bytes = cloudpickle.dumps(
            by_value, protocol=5, buffer_callback=lambda b: buffers.append(b.raw())
        )
    except Exception as exc:
        culprit = ", ".join(f"`{n}`" for n in by_value) or "the captured state"
        raise CaptureError(
            f"cannot send {culprit} to the job: pickling failed ({type(exc).__name__}: {exc})"
        ) from None
    return payload, buffers


def pickled_modules(payload: bytes) -> set[str]:
    """Top-level modules that unpickling ``payload`` imports (read from its opcodes)."""
    modules: set[str] = set()
    memo: dict[int, Any] = {}
    recent: list[Any] = []
    for opcode, arg, _ in pickletools.genops(payload):
        name = opcode.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(str(arg))] = recent[-1] if recent else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(int(str(arg))))
        elif name == "STACK_GLOBAL":
            module = recent[-2] if len(recent) >= 2 else None
            if isinstance(module, str):
                modules.add(module.split(".")[0])
            recent.append(None)
        elif name == "GLOBAL" and isinstance(arg, str):
            modules.add(arg.split()[0].split(".")[0])
        else:
            recent.append(None)
        del recent[:-4]
    return modules - {"builtins", "__main__", "copyreg", "_codecs"}
