"""What Baseten's ``POST .../jobs/{id}/ssh/sign`` does, on this machine: sign a user's
public key for one node of one job, and hand out the JWT its SSH proxy admits.

The keys live in the home's ``ssh/`` folder (0700, files 0600), made on first use:

- ``ca``: the certificate authority that signs user keys. A certificate names one
  principal, ``training-job-<job>-<node>`` (the host name ``truss ssh`` connects to), and
  is valid for :data:`CERT_TTL_S`; the proxy accepts it only for that node.
- ``jwt.pem``: the ES256 key of the proxy's admission tokens (Baseten's proxy takes a
  JWT before the SSH handshake; see truss's ``proxy_command.py``).
- ``host``: the proxy's SSH host key; ``proxy.crt``/``proxy.key``: its TLS certificate
  (self-signed for 127.0.0.1; the local backend trusts exactly that certificate).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bt_jupyter import api
from bt_jupyter._asyncssh import asyncssh
from bt_jupyter.local.home import Home, write_private
from bt_jupyter.local.store import JobRow
from bt_jupyter.local.wire import HttpError

#: How long a signed certificate (and its JWT) is good for; a client signs again after.
CERT_TTL_S = int(os.environ.get("BT_JUPYTER_SSH_CERT_TTL_S") or 3600)
#: The user a certificate logs in as, as on Baseten (truss's ssh config: ``User baseten``).
SSH_USER = "baseten"
AUDIENCE = "bt-jupyter-ssh-proxy"
#: Key types a user may have signed (what ``ssh-keygen`` and truss make).
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384")


def principal(job_id: str, node: int) -> str:
    """The one name a certificate is good for: the host name ``truss ssh`` connects to."""
    return f"training-job-{job_id}-{node}"


@dataclass(frozen=True)
class Admission:
    """What a valid JWT says: the node it opens."""

    job_id: str
    node: int

    @property
    def principal(self) -> str:
        return principal(self.job_id, self.node)


class Refused(Exception):
    """The proxy does not admit a connection; the message says why."""


class SshAuthority:
    def __init__(self, home: Home) -> None:
        self.folder = home.root / "ssh"
        self.folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.ca = self._ssh_key("ca")
        self.host_key = self._ssh_key("host")
        self._jwt_key = self._ec_key("jwt.pem")
        self.tls_cert, self.tls_key = self._tls()

    # ------------------------------------------------------------------ keys

    def _ssh_key(self, name: str) -> asyncssh.SSHKey:
        path = self.folder / name
        if not path.exists():
            key = asyncssh.generate_private_key("ssh-ed25519")
            write_private(path, key.export_private_key().decode())
        return asyncssh.read_private_key(str(path))

    def _ec_key(self, name: str) -> ec.EllipticCurvePrivateKey:
        path = self.folder / name
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(path, pem.decode())
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return loaded

    def _tls(self) -> tuple[Path, Path]:
        """A self-signed certificate for the proxy on 127.0.0.1."""
        cert_path, key_path = self.folder / "proxy.crt", self.folder / "proxy.key"
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        key = self._ec_key("proxy.key")
        cert = loopback_certificate(key, "bt-jupyter local SSH proxy", days=3650)
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())
        return cert_path, key_path

    # ------------------------------------------------------------------ sign

    def sign(
        self, job: JobRow, body: api.SignSSHCertificateRequestV1, proxy_address: str
    ) -> api.SignSSHCertificateResponseV1:
        node = _node(body.replica_id, job.node_count)
        if job.status.is_terminal:
            raise HttpError(
                409,
                "JOB_ENDED",
                f"training job {job.id} has ended ({job.status.short}): there is no node "
                "to connect to; start a new session",
            )
        user_key = _public_key(body.public_key)
        expires = int(time.time()) + CERT_TTL_S
        cert = self.ca.generate_user_certificate(
            user_key,
            key_id=f"{principal(job.id, node)}",
            principals=[principal(job.id, node)],
            valid_after=int(time.time()) - 60,
            valid_before=expires,
        )
        token = jwt.encode(
            {
                "sub": principal(job.id, node),
                "job_id": job.id,
                "replica_id": str(node),
                "aud": AUDIENCE,
                "iat": int(time.time()),
                "exp": expires,
            },
            self._jwt_key,
            algorithm="ES256",
        )
        return api.SignSSHCertificateResponseV1(
            ssh_certificate=cert.export_certificate().decode().strip(),
            jwt=token,
            proxy_address=proxy_address,
            ssh_cert_expires_at=dt.datetime.fromtimestamp(expires, dt.timezone.utc),
        )

    def admit(self, token: bytes) -> Admission:
        """The node a proxy connection's JWT opens, or :class:`Refused`."""
        try:
            claims = jwt.decode(
                token.decode("ascii", "replace"),
                self._jwt_key.public_key(),
                algorithms=["ES256"],
                audience=AUDIENCE,
                options={"require": ["exp", "sub", "job_id", "replica_id"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused("the JWT has expired: sign a new certificate") from None
        except jwt.PyJWTError as exc:
            raise Refused(f"not a JWT this service signed ({type(exc).__name__})") from None
        return Admission(str(claims["job_id"]), int(claims["replica_id"]))

    def authorized_keys(self, admission: Admission) -> asyncssh.SSHAuthorizedKeys:
        """The keys a connection admitted for ``admission`` may log in with: certificates
        of this authority for that node only."""
        ca = self.ca.export_public_key().decode().strip()
        return asyncssh.import_authorized_keys(
            f'cert-authority,principals="{admission.principal}" {ca}\n'
        )


def loopback_certificate(
    key: ec.EllipticCurvePrivateKey, common_name: str, days: int
) -> x509.Certificate:
    """A self-signed TLS certificate for 127.0.0.1: what a client trusts by pinning it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _node(replica_id: str | None, node_count: int) -> int:
    if replica_id is None or not replica_id.isdigit() or not replica_id.isascii():
        raise HttpError(
            400,
            "INVALID_REPLICA",
            "replica_id: give the node to connect to, '0' to "
            f"'{node_count - 1}' (a training job needs one)",
        )
    node = int(replica_id)
    if node >= node_count:
        raise HttpError(
            400,
            "INVALID_REPLICA",
            f"replica_id {node}: the job has {node_count} node(s), numbered 0 to {node_count - 1}",
        )
    return node


def _public_key(text: str) -> asyncssh.SSHKey:
    kind = text.strip().split(" ", 1)[0]
    if kind not in KEY_TYPES:
        raise HttpError(
            400,
            "INVALID_PUBLIC_KEY",
            f"public_key: expected an OpenSSH public key line ({', '.join(KEY_TYPES)}), "
            f"such as the contents of ~/.ssh/id_ed25519.pub",
        )
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise HttpError(400, "INVALID_PUBLIC_KEY", f"public_key: not a valid {kind} key") from None
