"""A module imported when it is first used, so ``%load_ext bt_jupyter`` stays light.

The magics and the widget hooks name the client, the concepts (pydantic) and the
packaging code, but a notebook that loads the extension and never submits a job should
not pay for them: each is a :class:`LazyModule` until an attribute is read. Type checkers
see the real module (import it under ``TYPE_CHECKING`` beside the lazy one).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name``; the first attribute read imports it (under the
    import lock, so two threads cannot see it half-made)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        module: ModuleType = import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """``name``, imported on first use (typed ``Any``: import it for type checkers too)."""
    return LazyModule(name)
