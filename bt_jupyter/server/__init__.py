"""The Jupyter server extension behind the JupyterLab sidebar: ``{base_url}bt-jupyter/``.

Loaded by jupyter_server only (``bt_jupyter._jupyter_server_extension_points`` names this
module without importing it), so a kernel that imports ``bt_jupyter`` never loads
tornado or jupyter_server. Endpoints and their JSON: see README ("JupyterLab sidebar").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    from bt_jupyter.server.setup import load

    load(serverapp)
