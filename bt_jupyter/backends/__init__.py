"""Everything that differs between the two services, behind one :class:`Backend`.

``local.py`` is bt_jupyter's own service (artifact store, log follow, deployments on this
machine); ``baseten/`` is Baseten's cloud (S3 upload, teams, vLLM deploys). Nothing
outside this package asks which one it talks to: :func:`backend_named` picks it once.
"""

from __future__ import annotations

from bt_jupyter.backends.base import After, Backend, DeployRequest, JobPage, LinesBatch
from bt_jupyter.client import ApiClient

__all__ = ["After", "Backend", "DeployRequest", "JobPage", "LinesBatch", "backend_named"]


def backend_named(name: str, rest: ApiClient) -> Backend:
    """The backend of that name (the one place that tells them apart)."""
    if name == "local":
        from bt_jupyter.backends.local import LocalBackend

        return LocalBackend(rest)
    if name == "baseten":
        from bt_jupyter.backends.baseten import BasetenBackend

        return BasetenBackend(rest)
    raise ValueError(f"unknown backend {name!r}; use 'local' or 'baseten'")
