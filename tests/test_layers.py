"""The dependency direction of DESIGN.md holds: the import-linter contracts in
pyproject.toml pass, and no module imports a module that imports it back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]


def _cycles(graph: grimp.ImportGraph, skip: str = "bt_jupyter") -> list[list[str]]:
    """Groups of modules that import each other, directly or not (Tarjan's strongly
    connected components). ``skip``: the package itself, whose ``__init__`` re-exports
    the public names of the modules below it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module) - {skip}):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules - {skip}):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = grimp.build_graph("bt_jupyter", exclude_type_checking_imports=True)
    assert len(graph.modules) > 50
    assert _cycles(graph) == []
    graph.add_import(importer="bt_jupyter.spec", imported="bt_jupyter.jobs")  # the check bites
    assert any({"bt_jupyter.jobs", "bt_jupyter.spec"} <= set(group) for group in _cycles(graph))


def test_the_layer_contracts_pass() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout
