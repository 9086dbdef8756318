"""User-facing errors: one line that names what was wrong and what is allowed.

IPython prints an exception through ``_render_traceback_`` when it has one, so a user
mistake shows as a single line in a notebook instead of a pydantic dump or a traceback.
"""

from __future__ import annotations


class BtJupyterError(Exception):
    """Base class of every error bt_jupyter raises on purpose."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class InvalidConfigError(BtJupyterError, ValueError):
    """A training configuration that Baseten would reject (or that cannot run)."""
