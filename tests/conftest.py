"""Shared fixtures. The Baseten OpenAPI spec is read from ../shared/reference when present."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

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
