"""Nobody but the session's owner runs code in it: the certificate and JWT are bound to
one node of one job and expire, the proxy forwards only to that node's kernel, the
kernel wants its key, and another local user can read neither the key nor the API key."""

from __future__ import annotations

import json
import os
import pwd
import queue
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import jwt
import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from bt_jupyter import api, remote
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import ApiError, AuthError, SessionEnded, SessionRefused
from bt_jupyter.local.home import Home
from bt_jupyter.remote import keys
from bt_jupyter.remote.tunnel import NodeTunnel
from bt_jupyter.session_kernel import connection_file
from tests.helpers import wait_for
from tests.test_live_sessions import start_session

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", autouse=True)
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("baseten_ssh")
    saved = os.environ.get("BASETEN_SSH_DIR")
    os.environ["BASETEN_SSH_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("BASETEN_SSH_DIR", None)
    else:
        os.environ["BASETEN_SSH_DIR"] = saved


@pytest.fixture(scope="module")
def two(local_home: Home, ssh_keys: Path) -> Iterator[tuple[remote.LiveSession, ...]]:
    """Two sessions: what one may open must not open the other."""
    first, second = start_session(local_home), start_session(local_home)
    first.kernel(0)
    second.kernel(0)
    yield first, second
    for session in (first, second):
        session.stop()
        session.job.wait(60)
        session.job.client.close()


def _sign(session: remote.LiveSession, node: int = 0) -> api.SignSSHCertificateResponseV1:
    key = keys.ensure_key()
    return session.job.client.api.sign_ssh(
        session.job.project_id, session.id, keys.public_line(key), node
    )


def _open(session: remote.LiveSession, signed: api.SignSSHCertificateResponseV1) -> NodeTunnel:
    return NodeTunnel.open(signed, keys.ensure_key(), session.job.client.backend.ssh_proxy_tls(), 0)


def test_signing_needs_the_api_key_and_a_real_node(
    local_home: Home, two: tuple[remote.LiveSession, ...]
) -> None:
    first = two[0]
    line = keys.public_line(keys.ensure_key())
    with ApiClient(first.job.client.url, "not-the-key") as stranger, pytest.raises(AuthError):
        stranger.sign_ssh(first.job.project_id, first.id, line, 0)
    rest = first.job.client.api
    with pytest.raises(ApiError, match=r"replica_id 1: the job has 1 node\(s\)"):
        rest.sign_ssh(first.job.project_id, first.id, line, 1)
    path = f"/v1/training_projects/{first.job.project_id}/jobs/{first.id}/ssh/sign"
    for body, said in (
        ({"public_key": line}, "replica_id: give the node"),
        ({"public_key": line, "replica_id": "-1"}, "replica_id: give the node"),
        ({"public_key": line, "replica_id": "0\x00"}, "replica_id"),
        ({"public_key": "ssh-ed25519 AAAAnot-base64", "replica_id": "0"}, "not a valid"),
        ({"public_key": "hello\x00", "replica_id": "0"}, "public_key"),
        ({"public_key": "x" * 20_000, "replica_id": "0"}, "public_key"),
        ({"public_key": line, "replica_id": "0", "admin": True}, "admin"),
    ):
        answer = rest._http.post(path, json=body)
        assert answer.status_code in (400, 422), (body, answer.text)
        assert said in answer.json()["message"], answer.text
    other_project = two[1].job.project_id
    with pytest.raises(ApiError, match="no training job"):
        rest.sign_ssh(other_project, first.id, line, 0)


def test_a_tampered_or_expired_jwt_is_refused(
    local_home: Home, two: tuple[remote.LiveSession, ...]
) -> None:
    first = two[0]
    signed = _sign(first)
    claims = jwt.decode(signed.jwt, options={"verify_signature": False})
    forged = jwt.encode({**claims, "job_id": two[1].id}, "a-guess" * 8, algorithm="HS256")
    service_key = (local_home.root / "ssh" / "jwt.pem").read_text()
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, service_key, algorithm="ES256")
    for token, why in (
        (expired, "the JWT has expired: sign a new certificate"),
        (forged, "not a JWT this service signed"),
        (signed.jwt[:-4] + "AAAA", "not a JWT this service signed"),
        ("", "not a JWT this service signed"),
    ):
        with pytest.raises(SessionRefused, match=why):
            _open(first, signed.model_copy(update={"jwt": token}))


def test_a_certificate_opens_only_its_own_node(two: tuple[remote.LiveSession, ...]) -> None:
    first, second = two
    mine, theirs = _sign(first), _sign(second)
    # the JWT of the second session with the certificate of the first: the node (the
    # second's) wants a certificate that names it
    crossed = theirs.model_copy(update={"ssh_certificate": mine.ssh_certificate})
    with pytest.raises(SessionRefused, match="refused the certificate"):
        _open(second, crossed)
    # a certificate the user made themselves (their own CA)
    rogue_ca = asyncssh.generate_private_key("ssh-ed25519")
    user = keys.ensure_key()
    selfmade = rogue_ca.generate_user_certificate(
        user, "me", principals=[f"training-job-{first.id}-0"]
    )
    forged = mine.model_copy(update={"ssh_certificate": selfmade.export_certificate().decode()})
    with pytest.raises(SessionRefused, match="refused the certificate"):
        _open(first, forged)
    # the right pair works
    tunnel = _open(first, mine)
    assert tunnel.run("echo $BT_NODE_RANK").stdout.strip() == "0"
    tunnel.close()


def test_the_proxy_forwards_only_to_the_nodes_kernel(
    local_home: Home, two: tuple[remote.LiveSession, ...]
) -> None:
    first = two[0]
    tunnel = _open(first, _sign(first))
    service_port = int(first.job.client.url.rsplit(":", 1)[1])
    try:
        local = tunnel.forward(service_port)  # listening here is allowed; reaching is not
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{local}/v1/local/health", timeout=5)
        info = json.loads(connection_file(local_home.node_home(first.id, 0)).read_text())
        shell = tunnel.forward(info["shell_port"])
        assert shell > 0
    finally:
        tunnel.close()


def test_the_kernel_wants_its_key(local_home: Home, two: tuple[remote.LiveSession, ...]) -> None:
    """Someone who reaches a kernel port (on this machine, any local user can) but has
    not read its connection file gets no answer."""
    info = json.loads(connection_file(local_home.node_home(two[0].id, 0)).read_text())
    for key, answers in (("a-guess", False), (info["key"], True)):
        client = BlockingKernelClient()
        client.load_connection_info({**info, "key": key})
        client.start_channels()
        try:
            msg_id = client.execute("print('ran')")
            try:
                reply = client.get_shell_msg(timeout=5)
                got = reply["parent_header"].get("msg_id") == msg_id
            except queue.Empty:
                got = False
            assert got is answers
        finally:
            client.stop_channels()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_reads_neither_key(
    local_home: Home, two: tuple[remote.LiveSession, ...]
) -> None:
    other = pwd.getpwnam("nobody")
    for secret in (
        connection_file(local_home.node_home(two[0].id, 0)),
        local_home.api_key_file,
        local_home.root / "ssh" / "ca",
    ):
        done = subprocess.run(
            ["cat", str(secret)], user=other.pw_uid, group=other.pw_gid, capture_output=True
        )
        assert done.returncode != 0, secret
        assert b"Permission denied" in done.stderr


def test_the_idle_timeout_stops_the_job(local_home: Home, ssh_keys: Path) -> None:
    session = start_session(local_home, timeout_s=3)
    try:
        session.kernel(0)
        job = session.job.wait(90)
        assert job.status.short == "COMPLETED"
        logs = " ".join(line.message for line in job.logs())
        assert "session idle for 3 s (--timeout): stopping" in logs
        with pytest.raises(SessionEnded, match=f"session {session.id} has ended \\(COMPLETED"):
            session.run("1", [0], lambda _: None)
    finally:
        session.job.client.close()


def test_a_stopped_session_refuses_new_connections(local_home: Home, ssh_keys: Path) -> None:
    session = start_session(local_home)
    try:
        session.kernel(0)
        signed_before = _sign(session)
        session.stop()
        wait_for(lambda: session.job.refresh().status.is_terminal, 30, "the session to stop")
        with pytest.raises(ApiError, match="has ended"):
            _sign(session)
        with pytest.raises(SessionRefused, match="is STOPPED: its nodes are not running"):
            _open(session, signed_before)
    finally:
        session.job.client.close()


def test_a_session_survives_a_closed_connection(two: tuple[remote.LiveSession, ...]) -> None:
    """A dropped connection (network, laptop sleep) is made again on the next cell."""
    first = two[0]
    out: list[str] = []
    first.run("survivor = 7", [0], lambda _: None)
    first.kernel(0).tunnel.close()
    first.run("print(survivor)", [0], lambda o: out.append(o.content.get("text", "")))
    assert "7" in "".join(out)


def test_a_service_restart_keeps_the_session_and_its_variables(
    tmp_path_factory: pytest.TempPathFactory, ssh_keys: Path
) -> None:
    """The service (and its SSH proxy) restarts under a session: the job's kernel lives
    on; the next cell signs again, reaches the new proxy, and finds its variables."""
    from bt_jupyter.local import daemon
    from tests.helpers import running_service

    home = Home(tmp_path_factory.mktemp("restarted"))
    with running_service(home):
        session = start_session(home)
        try:
            session.run("kept = 'through the restart'", [0], lambda _: None)
            daemon.stop(home)
            daemon.ensure_running(home)
            out: list[str] = []
            session.run("print(kept)", [0], lambda o: out.append(o.content.get("text", "")))
            assert "through the restart" in "".join(out)
        finally:
            session.stop()
            session.job.wait(60)
            session.job.client.close()


def test_a_killed_kernel_is_one_clear_line(local_home: Home, ssh_keys: Path) -> None:
    """kill -9 of the node's process: the job fails, and the next cell says the session
    ended (no traceback of ours, no hang)."""
    import psutil

    session = start_session(local_home)
    try:
        psutil.Process(int(session.status(0)["pid"])).kill()
        with pytest.raises(SessionEnded, match=f"session {session.id} has ended"):
            session.run("1", [0], lambda _: None)
        assert session.job.refresh().status.is_terminal
    finally:
        session.job.client.close()
