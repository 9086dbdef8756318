"""What the browser tests (and the sidebar benchmark) share: JupyterLab or Jupyter Server
on a free port, and a notebook opened in Debian's chromium (Playwright drives it; its own
browser download cannot work here)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest

from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.helpers import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (apt-get install chromium)",
)
KERNEL_IDLE = (
    "() => { const w = window.jupyterapp.shell.currentWidget;"
    " return w && w.sessionContext && w.sessionContext.session"
    " && w.sessionContext.session.kernel"
    " && w.sessionContext.session.kernel.status === 'idle'; }"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def jupyterlab(
    home: Home, root: Path, *, without_labextension: bool = False, python: str = sys.executable
) -> Iterator[tuple[str, str]]:
    """JupyterLab serving ``root``, its kernels using ``home``'s service: (url, token).
    ``without_labextension`` disables ours, as VS Code and Colab-style frontends render
    the widget with no labextension; ``python`` is the environment it runs in (its
    kernels too)."""
    env: dict[str, str] = {}
    if without_labextension:
        config = root / "jupyter-config"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"bt-jupyter": True}})
        )
        env["JUPYTER_CONFIG_DIR"] = str(config)
    args = ("--LabApp.expose_app_in_browser=True",)
    with jupyter("jupyterlab", home, root, *args, env=env, python=python) as lab:
        yield lab


@contextmanager
def jupyter(
    module: str,
    home: Home,
    root: Path,
    *args: str,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> Iterator[tuple[str, str]]:
    """``python -m module`` (jupyterlab, jupyter_server) on a free port: (url, token)."""
    port, token = _free_port(), new_id(24)
    env = {**os.environ, "BT_JUPYTER_HOME": str(home.root), **(env or {})}
    log = (root / f"{module}.log").open("w")
    proc = subprocess.Popen(
        [
            python, "-m", module, "--no-browser", "--allow-root", f"--port={port}",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.ip=127.0.0.1", *args,
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, f"{module} to answer", every=0.2)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def expect(target: Any) -> Any:
    """Playwright's assertions, which retry until they hold (30 s: a busy machine draws a
    chart later than Playwright's default 5 s)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=30_000)
    return sync_api.expect(target)


def write_notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)


@contextmanager
def notebook_page(lab: tuple[str, str], name: str, height: int = 1000) -> Iterator[Any]:
    """A chromium page with notebook ``name`` open and its kernel idle."""
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(f"{base}/lab/tree/{name}?token={token}")
            page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
            page.wait_for_function(KERNEL_IDLE, timeout=90_000)
            yield page
        finally:
            browser.close()
