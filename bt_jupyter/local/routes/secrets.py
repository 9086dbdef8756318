"""``GET /v1/secrets`` and ``GET /v1/teams/{team_id}/secrets``: the names of the secrets a
job can reference, as Baseten lists them (``{"secrets": [{"name": ...}]}``, the shape
truss reads). Values never leave the store; the local store is one for every team."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.state import State
from bt_jupyter.local.wire import blocking

router = APIRouter(prefix="/v1")


async def _names(state: State) -> JSONResponse:
    names = await blocking(SecretStore(state.home).names)
    return JSONResponse({"secrets": [{"name": name} for name in names]})


@router.get("/secrets")
async def list_secrets(state: State) -> JSONResponse:
    return await _names(state)


@router.get("/teams/{team_id}/secrets")
async def list_team_secrets(team_id: str, state: State) -> JSONResponse:
    return await _names(state)
