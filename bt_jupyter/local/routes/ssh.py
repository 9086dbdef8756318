"""``POST .../jobs/{id}/ssh/sign``: a certificate for one node of a job, and the JWT and
address of the SSH proxy that admits it (see ``local/ssh_authority``, ``local/ssh_proxy``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from bt_jupyter import api
from bt_jupyter.local.state import State
from bt_jupyter.local.wire import blocking as run
from bt_jupyter.local.wire import ok, parse_body

router = APIRouter(prefix="/v1")


@router.post("/training_projects/{project_id}/jobs/{job_id}/ssh/sign")
async def sign(project_id: str, job_id: str, request: Request, state: State) -> JSONResponse:
    _, job = state.job(project_id, job_id)
    body = await parse_body(request, api.SignSSHCertificateRequestV1)
    return ok(await run(state.sign_ssh, job, body))


@router.get("/local/ssh/proxy_certificate")
async def proxy_certificate(state: State) -> PlainTextResponse:
    """The SSH proxy's TLS certificate (PEM): the one a local client trusts."""
    authority, _ = await run(state.ssh)
    return PlainTextResponse(authority.tls_cert.read_text(), media_type="application/x-pem-file")
