"""Shared fixtures. The Baseten OpenAPI spec is the copy in tests/data (see its README)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.magics import BtMagics
from tests.helpers import running_service

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = Path(
    os.environ.get(
        "BT_JUPYTER_OPENAPI_SPEC",
        REPO / "tests" / "data" / "baseten-training-openapi.json",
    )
)


#: Test files that start jobs, deployments or a browser: `make test-fast` (``-m "not
#: slow"``) leaves them out, for an inner loop of about a minute. Everything else there
#: starts at most a local service. A file that starts jobs belongs here.
SLOW_FILES = frozenset(
    {
        "test_browser",
        "test_browser_runs",
        "test_browser_session",
        "test_browser_widget",
        "test_canary",
        "test_capacity",
        "test_client",
        "test_cloud",
        "test_cloud_faithful",
        "test_demo",
        "test_deploy",
        "test_doors",
        "test_faithful",
        "test_lab_extension",
        "test_lab_panel",
        "test_live_sessions",
        "test_local_contract",
        "test_local_jobs",
        "test_local_resilience",
        "test_local_runtime",
        "test_log_reads",
        "test_magics",
        "test_notebook7",
        "test_notebook_kernel",
        "test_notebook_lora",
        "test_notebooks",
        "test_package_store",
        "test_packaging",
        "test_processes",
        "test_restart",
        "test_server",
        "test_session_access",
        "test_sessions",
        "test_sweeps",
        "test_trackers",
        "test_tutorials",
        "test_truss_cli",
        "test_weights",
        "test_wheel",
        "test_widget_kernel",
        "test_widget_state",
    }
)


#: The files that take a worker longest (a minute or more each: wheel build, notebooks,
#: browser sessions), started first so no worker is left with one at the end.
LONGEST_FIRST = (
    "test_wheel",
    "test_demo",
    "test_notebook_lora",
    "test_faithful",
    "test_lab_panel",
    "test_browser_runs",
    "test_browser_widget",
    "test_live_sessions",
    "test_cloud",
    "test_notebooks",
    "test_browser_session",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    # a stable sort: each file's tests keep their order, the other files theirs
    rank = {stem: n for n, stem in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end, no service or runner of a test's home may still run (a client that
    starts its service again after a test stopped it would leave one): end any, and fail."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    left = [
        p
        for p in psutil.process_iter(["pid", "cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE  # ended: only not yet reaped
        and any("bt_jupyter.local" in part for part in p.info["cmdline"] or ())
        and any(part.startswith(base) for part in p.info["cmdline"] or ())
    ]
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"left running: {[' '.join(p.info['cmdline']) for p in left]}"


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return spec


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    """The IPython shell cells are packaged from, with a clean namespace each test."""
    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    yield ip
    ip.reset(new_session=False)


# --------------------------------------------------------------------------- local service


@pytest.fixture(scope="session")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A private state dir with a running local service, stopped at the end."""
    home = Home(tmp_path_factory.mktemp("bt_home"))
    with running_service(home):
        yield home


@pytest.fixture(scope="session")
def client(local_home: Home) -> Iterator[ApiClient]:
    with ApiClient.local(local_home.root) as c:
        yield c


@pytest.fixture
def project(client: ApiClient, request: pytest.FixtureRequest) -> api.TrainingProjectV1:
    """A fresh project per test, named after it."""
    return client.upsert_project(f"t-{request.node.name}-{new_id()}")


@contextmanager
def magics_on(home: Home, project: str) -> Iterator[InteractiveShell]:
    """The IPython shell with the magics loaded, talking to the service of ``home`` (the
    magics keep their clients across tests: they are dropped before and after), in
    ``project``, not following jobs in the terminal."""
    saved = os.environ.get("BT_JUPYTER_HOME")
    os.environ["BT_JUPYTER_HOME"] = str(home.root)
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    shell.run_line_magic("load_ext", "bt_jupyter")
    magics = shell.magics_manager.registry["BtMagics"]
    _drop_clients(magics)
    shell.run_line_magic("bt_project", project)
    shell.run_line_magic("config", "BtMagics.follow_in_terminal = False")
    try:
        yield shell
    finally:
        shell.run_line_magic("config", "BtMagics.follow_in_terminal = True")
        _drop_clients(magics)
        shell.reset(new_session=False)
        if saved is None:
            os.environ.pop("BT_JUPYTER_HOME", None)
        else:
            os.environ["BT_JUPYTER_HOME"] = saved


def _drop_clients(magics: BtMagics) -> None:
    for client in magics._clients.values():
        client.close()
    magics._clients.clear()


@pytest.fixture
def ip(local_home: Home) -> Iterator[InteractiveShell]:
    """The magics on the test service, in a fresh project."""
    with magics_on(local_home, f"magics-{new_id()}") as shell:
        yield shell
