"""Cell -> Bundle: capture the state a cell reads, pin its dependencies, pack its files."""

from bt_jupyter.packaging.bundle import Bundle, PackageOptions, describe, package_cell
from bt_jupyter.packaging.capture import CaptureError, names_read
from bt_jupyter.packaging.deps import DependencyError
from bt_jupyter.packaging.files import IncludeError

__all__ = [
    "Bundle",
    "CaptureError",
    "DependencyError",
    "IncludeError",
    "PackageOptions",
    "describe",
    "names_read",
    "package_cell",
]
