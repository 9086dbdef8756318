"""Interactive sessions as Baseten's API shows them: per node, a device code that lets an
IDE open a tunnel into the node, from when the session's trigger fired until it expires.

Only the Baseten stand-in (baseten mode) opens them: it plays Baseten's cloud, so a
client's session views and updates are exercised against Baseten's shapes. Its codes are
made up (nothing here runs a tunnel), and it says so in the tunnel name. The plain local
service opens none (its sessions are the notebook's own), so it answers no auth codes and
a session it never opened is not found, as on Baseten for a job without one.

- ``on_startup``: opened when the job starts RUNNING;
- ``on_failure``: opened when the job FAILED;
- ``on_demand``: never opened on its own.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

from bt_jupyter import api, spec
from bt_jupyter.errors import InvalidConfigError
from bt_jupyter.local.store import JobRow, SessionRow, Store, new_id
from bt_jupyter.local.wire import HttpError, not_found, utc

S = spec.TrainingJobStatus
T = spec.InteractiveSessionTrigger
#: What "-1" adds (Baseten: "infinite", a ten-year bump).
FOREVER_MINUTES = 10 * 365 * 24 * 60
AUTH_URLS = {
    "github": "https://github.com/login/device",
    "microsoft": "https://microsoft.com/devicelogin",
}
#: When each trigger opens the sessions.
OPENS_AT = {T.ON_STARTUP.value: S.RUNNING, T.ON_FAILURE.value: S.FAILED}


def _config(job: JobRow) -> spec.InteractiveSession | None:
    raw = job.spec.get("interactive_session")
    if not isinstance(raw, dict):
        return None
    try:
        return spec.InteractiveSession.model_validate(raw)
    except InvalidConfigError:
        return None  # written by an older service: no session rather than an error


def _device_code() -> str:
    """``4F64-C0D9``: the shape of a device-flow code."""
    raw = secrets.token_hex(4).upper()
    return f"{raw[:4]}-{raw[4:]}"


def open_due(store: Store, job: JobRow, baseten_mode: bool) -> list[SessionRow]:
    """The job's sessions, opening them (one per node) once its trigger has fired."""
    found = store.sessions(job.id)
    config = _config(job)
    if found or not baseten_mode or config is None:
        return found
    status = OPENS_AT.get(config.trigger.value)
    fired = next((at for s, at in store.history(job.id) if s == status), None)
    if status is None or fired is None:
        return found
    workdir = "/b10/workspace" if job.spec.get("enable_baseten_workdir", True) else "/"
    store.add_sessions(
        SessionRow(
            id=new_id(),
            job_id=job.id,
            node=node,
            trigger=config.trigger.value,
            timeout_minutes=config.timeout_minutes,
            session_provider=config.session_provider,
            auth_provider=config.auth_provider,
            auth_code=_device_code(),
            created_at=fired,
            expires_at=fired + config.timeout_minutes * 60,
            working_directory=workdir,
        )
        for node in range(job.node_count)
    )
    return store.sessions(job.id)


def auth_code(session: SessionRow) -> api.AuthCodeV1:
    return api.AuthCodeV1(
        session_id=session.id,
        replica_id=f"g00r{session.node}",
        auth_code=session.auth_code,
        auth_url=AUTH_URLS.get(session.auth_provider, AUTH_URLS["github"]),
        generated_at=utc(session.created_at).isoformat(),
        tunnel_name=f"stand-in-{session.job_id}-{session.node}",
        expires_at=utc(session.expires_at).isoformat(),
        working_directory=session.working_directory,
    )


def wire(session: SessionRow) -> api.InteractiveSessionV1:
    code = auth_code(session)
    return api.InteractiveSessionV1(
        id=session.id,
        trigger=session.trigger,
        timeout_minutes=session.timeout_minutes,
        session_provider=session.session_provider,
        auth_provider=session.auth_provider,
        pod_name=str(session.node),
        expires_at=code.expires_at,
        tunnel_name=code.tunnel_name,
        auth_code=code.auth_code,
        auth_url=code.auth_url,
        auth_code_generated_at=code.generated_at,
        working_directory=session.working_directory,
    )


def patch(
    store: Store, job: JobRow, session_id: str, body: api.PatchInteractiveSessionRequestV1
) -> api.PatchInteractiveSessionResponseV1:
    """Baseten's rules: an ``on_startup`` session keeps its trigger (its time is extended
    instead); minutes are added to the expiry (on_startup) or the timeout (the others)."""
    session = next((s for s in store.sessions(job.id) if s.id == session_id), None)
    if session is None:
        raise not_found(f"interactive session of job {job.id}", session_id)
    trigger, minutes, expires = session.trigger, session.timeout_minutes, session.expires_at
    said = []
    if body.trigger is not None and body.trigger.value != trigger:
        if trigger == T.ON_STARTUP.value:
            raise HttpError(
                400,
                "INVALID_REQUEST",
                "an on_startup session's trigger cannot change; extend it with timeout_minutes",
            )
        said.append(f"trigger {trigger} -> {body.trigger.value}")
        trigger = body.trigger.value
    if body.timeout_minutes is not None:
        added = FOREVER_MINUTES if body.timeout_minutes == -1 else body.timeout_minutes
        expires += added * 60
        if session.trigger == T.ON_STARTUP.value:
            said.append(f"expiry extended by {timedelta(minutes=added)}")
        else:
            minutes += added
            said.append(f"timeout now {minutes} minutes")
    if not said:
        said.append("nothing to change")
    store.update_session(session.id, trigger, minutes, expires)
    updated = next(s for s in store.sessions(job.id) if s.id == session.id)
    return api.PatchInteractiveSessionResponseV1(
        interactive_session=wire(updated), message="; ".join(said)
    )


def live(sessions: list[SessionRow]) -> list[SessionRow]:
    """The sessions not yet expired."""
    now = time.time()
    return [s for s in sessions if s.expires_at > now]
