"""Wire the extension into a running jupyter_server: state, routes, shutdown."""

from __future__ import annotations

from jupyter_server.serverapp import ServerApp

from bt_jupyter.server.backends import BtJupyterServer
from bt_jupyter.server.handlers import SETTINGS_KEY, routes


def load(serverapp: ServerApp) -> BtJupyterServer:
    """Add the ``bt-jupyter/`` handlers; ``c.BtJupyterServer.*`` configures them."""
    state = BtJupyterServer(parent=serverapp, log=serverapp.log)
    web_app = serverapp.web_app
    web_app.settings[SETTINGS_KEY] = state
    handlers = routes(web_app.settings["base_url"])
    web_app.add_handlers(".*$", handlers)  # type: ignore[no-untyped-call]
    _close_on_stop(serverapp, state)
    serverapp.log.info(
        "bt_jupyter | bt-jupyter/ API loaded (default backend: %s)", state.default_backend
    )
    return state


def _close_on_stop(serverapp: ServerApp, state: BtJupyterServer) -> None:
    """Close the clients when the server stops. jupyter_server calls stop hooks of
    ExtensionApps only; a module extension like this one is closed from the server's
    extension cleanup, which ``ServerApp._cleanup`` awaits on every shutdown."""
    cleanup_extensions = serverapp.cleanup_extensions

    async def cleanup_then_close() -> None:
        try:
            await cleanup_extensions()
        finally:
            state.close()

    serverapp.cleanup_extensions = cleanup_then_close  # type: ignore[method-assign]
