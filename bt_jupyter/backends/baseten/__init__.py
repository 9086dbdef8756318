"""Baseten's cloud: S3 upload with blob credentials, teams, and deploys through GraphQL.

:class:`BasetenBackend` is what ``Client.baseten()`` talks through.
"""

from bt_jupyter.backends.baseten.backend import BasetenBackend
from bt_jupyter.errors import NoCheckpoint

__all__ = ["BasetenBackend", "NoCheckpoint"]
