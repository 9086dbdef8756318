"""Cell -> Bundle: capture the state a cell reads, pin its dependencies, pack its files."""

from bt_jupyter.errors import CaptureError, DependencyError, IncludeError
from bt_jupyter.packaging.bundle import (
    Bundle,
    PackageOptions,
    describe,
    package_cell,
    runs_bundle,
)
from bt_jupyter.packaging.capture import names_read

__all__ = [
    "Bundle",
    "CaptureError",
    "DependencyError",
    "IncludeError",
    "PackageOptions",
    "describe",
    "names_read",
    "package_cell",
    "runs_bundle",
]
