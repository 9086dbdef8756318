"""Shared fixtures. The Baseten OpenAPI spec is read from ../shared/reference when present."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.helpers import running_service

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = Path(
    os.environ.get(
        "BT_JUPYTER_OPENAPI_SPEC",
        REPO.parent / "shared" / "reference" / "baseten-training-openapi.json",
    )
)


@pytest.fixture(scope="session")
def openapi_spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        pytest.skip(f"Baseten OpenAPI spec not found at {SPEC_PATH} (set BT_JUPYTER_OPENAPI_SPEC)")
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return spec


@pytest.fixture(scope="session")
def openapi_if_present() -> dict[str, Any] | None:
    """The spec where it is, for tests whose behaviour counts without it too (they add
    the contract check when it is there)."""
    return json.loads(SPEC_PATH.read_text()) if SPEC_PATH.is_file() else None


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
