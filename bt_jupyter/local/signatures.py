"""Signatures the local service checks: its own presigned download URLs, and the AWS
Signature Version 4 of requests to its S3 stand-in.

Both are keyed by secrets of this service instance, kept in this process only, so a
restart ends every URL and every blob credential handed out before it:

- A presigned URL (``?expires=<epoch>&sig=<hex>``) is an HMAC-SHA256 of its path and
  expiry under a random per-process key; it expires (``Settings.url_ttl_s``, an hour by
  default), and an altered path or expiry does not verify.
- The S3 stand-in takes only requests signed (SigV4, header or query string) with a
  secret it issued; the expected signature is computed by botocore's own signer from the
  request as received, never by code of ours.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from bt_jupyter.local.settings import MAX_URL_TTL_S
from bt_jupyter.local.store import new_id
from bt_jupyter.local.wire import HttpError

#: Key of this instance's presigned URLs: made at import, gone with the process.
_URL_KEY = secrets.token_bytes(32)

#: How far a SigV4 request's X-Amz-Date may be from now (S3's limit).
MAX_SKEW_S = 15 * 60
#: How long issued blob credentials sign uploads (they also end with the service).
S3_CREDENTIALS_TTL_S = 12 * 3600
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_ALGORITHM = "AWS4-HMAC-SHA256"
_SCOPE = re.compile(r"^([A-Za-z0-9]{1,128})/(\d{8})/([a-z0-9-]{1,32})/s3/aws4_request$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: x-amz-content-sha256 values that stand for a payload the signature does not cover
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def _forbidden(code: str, message: str) -> HttpError:
    return HttpError(403, code, message)


def ascii_digits(value: str, most: int) -> bool:
    """ASCII digits only, at most ``most`` of them (``str.isdigit`` takes '²', which
    ``int`` refuses)."""
    return 0 < len(value) <= most and value.isascii() and value.isdigit()


def _quoted(value: str, limit: int = 60) -> str:
    """``value`` for an error message: repr'd and cut, so no message echoes much input."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


# ----------------------------------------------------------------------------- download URLs


def sign(path: str, expires: int) -> str:
    """The signature of ``path`` valid until ``expires`` (epoch seconds). The expiry has
    only digits and comes last, so no other (path, expiry) pair signs the same text."""
    return hmac.new(_URL_KEY, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(path: str, expires_in: int) -> str:
    """``expires=...&sig=...`` for a presigned URL of ``path``."""
    expires = int(time.time()) + expires_in
    return urlencode({"expires": expires, "sig": sign(path, expires)})


def signed_url(request: Request, path: str, expires_in: int) -> str:
    """A URL of ``path`` on the service that got ``request``, valid for ``expires_in``
    seconds without an API key."""
    return f"{str(request.base_url).rstrip('/')}{path}?{signed_query(path, expires_in)}"


def check_signature(request: Request, refuse_authorization: bool) -> None:
    """A presigned URL carries its own signature and expiry. Like S3, the baseten-mode
    stand-in (``refuse_authorization``) refuses a request that also sends an
    Authorization header (even an empty one)."""
    if refuse_authorization and "authorization" in request.headers:
        raise _forbidden(
            "FORBIDDEN",
            "a presigned URL takes no Authorization header: its signature is in the URL",
        )
    raw_expires = request.query_params.get("expires", "")
    given = request.query_params.get("sig", "")
    valid = ascii_digits(raw_expires, 12)
    expected = sign(request.url.path, int(raw_expires)) if valid else ""
    if not valid or not hmac.compare_digest(given.encode(), expected.encode()):
        raise _forbidden(
            "FORBIDDEN",
            "invalid signature on this download URL (altered, or made by an earlier run of "
            "the service): ask the API for a new URL",
        )
    if int(raw_expires) < time.time():
        when = datetime.fromtimestamp(int(raw_expires), tz=timezone.utc)
        raise _forbidden(
            "FORBIDDEN",
            f"this download URL expired at {when:%Y-%m-%d %H:%M:%S} UTC: ask the API for a new URL",
        )


# ----------------------------------------------------------------------------- blob credentials


@dataclass(frozen=True)
class S3Credentials:
    """Throwaway credentials for the S3 stand-in, as ``/v1/blobs/credentials`` hands out."""

    access_key: str
    secret_key: str
    session_token: str
    expires_at: float


_issued: dict[str, S3Credentials] = {}
_issued_lock = threading.Lock()


def issue_s3_credentials() -> S3Credentials:
    """New credentials the S3 stand-in takes until they expire or the service ends."""
    now = time.time()
    creds = S3Credentials(
        access_key=f"LOCAL{new_id(12).upper()}",
        secret_key=secrets.token_urlsafe(30),
        session_token=secrets.token_urlsafe(30),
        expires_at=now + S3_CREDENTIALS_TTL_S,
    )
    with _issued_lock:
        for key in [k for k, c in _issued.items() if c.expires_at < now]:
            del _issued[key]
        _issued[creds.access_key] = creds
    return creds


def _issued_credentials(access_key: str) -> S3Credentials:
    with _issued_lock:
        creds = _issued.get(access_key)
    if creds is None or creds.expires_at < time.time():
        raise _forbidden(
            "InvalidAccessKeyId",
            f"access key {_quoted(access_key, 40)} was not issued by this service (or has "
            "expired): use credentials from GET /v1/blobs/credentials/train",
        )
    return creds


# ----------------------------------------------------------------------------- SigV4 (S3)


@dataclass(frozen=True)
class _SigV4:
    """The signature fields of a request: from its Authorization header or its query."""

    access_key: str
    date: str  # the scope's YYYYMMDD
    region: str
    amz_date: str
    signed_headers: list[str]
    signature: str
    expires_s: int | None  # query-string (presigned) requests only
    token: str | None


def _scope(credential: str) -> tuple[str, str, str]:
    found = _SCOPE.match(credential)
    if found is None:
        raise _forbidden(
            "AccessDenied",
            f"credential scope {_quoted(credential)} is not "
            "'<access key>/<yyyymmdd>/<region>/s3/aws4_request'",
        )
    access_key, date, region = found.groups()
    return access_key, date, region


def _from_header(request: Request, header: str) -> _SigV4:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != _ALGORITHM:
        raise _forbidden(
            "AccessDenied", f"only AWS Signature Version 4 ({_ALGORITHM}) is accepted here"
        )
    pairs = (part.strip().partition("=") for part in rest.split(","))
    fields = {name: value for name, _, value in pairs}
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        raise _forbidden("AccessDenied", f"malformed Authorization header: no {', '.join(missing)}")
    access_key, date, region = _scope(fields["Credential"])
    return _SigV4(
        access_key=access_key,
        date=date,
        region=region,
        amz_date=request.headers.get("x-amz-date", ""),
        signed_headers=fields["SignedHeaders"].split(";"),
        signature=fields["Signature"],
        expires_s=None,
        token=request.headers.get("x-amz-security-token"),
    )


def _from_query(request: Request) -> _SigV4:
    query = request.query_params
    if query.get("X-Amz-Algorithm") != _ALGORITHM:
        raise _forbidden("AccessDenied", f"a presigned URL needs X-Amz-Algorithm={_ALGORITHM}")
    missing = [
        f
        for f in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
        if not query.get(f)
    ]
    if missing:
        raise _forbidden("AccessDenied", f"presigned URL without {', '.join(missing)}")
    raw_expires = query["X-Amz-Expires"]
    if not ascii_digits(raw_expires, 7) or not 1 <= int(raw_expires) <= MAX_URL_TTL_S:
        raise _forbidden(
            "AccessDenied",
            f"X-Amz-Expires must be between 1 and {MAX_URL_TTL_S} seconds, "
            f"got {_quoted(raw_expires)}",
        )
    access_key, date, region = _scope(query["X-Amz-Credential"])
    return _SigV4(
        access_key=access_key,
        date=date,
        region=region,
        amz_date=query["X-Amz-Date"],
        signed_headers=query["X-Amz-SignedHeaders"].split(";"),
        signature=query.get("X-Amz-Signature", ""),
        expires_s=int(raw_expires),
        token=query.get("X-Amz-Security-Token"),
    )


def _check_time(sig: _SigV4) -> None:
    """X-Amz-Date within 15 minutes of now; a presigned request's expiry not passed."""
    try:
        signed_at = calendar.timegm(time.strptime(sig.amz_date, _AMZ_DATE))
    except ValueError:
        raise _forbidden(
            "AccessDenied",
            f"X-Amz-Date {_quoted(sig.amz_date)} is not a date like 20240131T120000Z",
        ) from None
    now = time.time()
    if sig.expires_s is not None and now > signed_at + sig.expires_s:
        raise _forbidden("AccessDenied", "this presigned URL has expired: presign a new one")
    if signed_at - now > MAX_SKEW_S or (sig.expires_s is None and now - signed_at > MAX_SKEW_S):
        raise _forbidden(
            "RequestTimeTooSkewed",
            f"X-Amz-Date {sig.amz_date} is more than 15 minutes from the service's time "
            f"({time.strftime(_AMZ_DATE, time.gmtime(now))}): check this machine's clock",
        )


def _check_headers(request: Request, sig: _SigV4) -> None:
    """What SigV4 on S3 requires of the signed headers: host and every x-amz-* header
    sent are signed, and every signed header was sent."""
    signed = set(sig.signed_headers)
    absent = sorted(h for h in signed if h not in request.headers)
    if absent:
        raise _forbidden("AccessDenied", f"signed header {absent[0]!r} is not in the request")
    needed = {"host"} | {h for h in request.headers if h.startswith("x-amz-")}
    if sig.expires_s is None:
        needed |= {"x-amz-date", "x-amz-content-sha256"}
    unsigned = sorted(needed - signed)
    if unsigned:
        raise _forbidden(
            "AccessDenied", f"header {unsigned[0]!r} must be sent and covered by the signature"
        )


def _expected_signature(request: Request, sig: _SigV4, creds: S3Credentials) -> str:
    """What botocore's S3 signer makes of this request, as received, with the issued
    secret: the canonical request is rebuilt from the raw path and query and the signed
    headers only (the header's own x-amz-content-sha256 stands for the payload)."""
    try:
        from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:
        raise _forbidden(
            "AccessDenied",
            "the S3 stand-in needs botocore to check signatures: pip install 'bt_jupyter[cloud]'",
        ) from None

    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"").decode("latin-1")
    if sig.expires_s is not None:
        query = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
    url = f"http://s3{raw_path.decode('latin-1')}" + (f"?{query}" if query else "")
    aws_request = AWSRequest(method=request.method, url=url)
    for name in sig.signed_headers:
        aws_request.headers[name] = ",".join(request.headers.getlist(name))
    aws_request.context["timestamp"] = sig.amz_date
    signer_class: Any = S3SigV4QueryAuth if sig.expires_s is not None else S3SigV4Auth
    signer = signer_class(
        Credentials(creds.access_key, creds.secret_key, creds.session_token), "s3", sig.region
    )
    canonical = signer.canonical_request(aws_request)
    signature: str = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    return signature


def verify_s3_request(request: Request) -> S3Credentials:
    """The issued credentials that signed ``request`` (SigV4, header or presigned); 403
    with S3's error code for anything else, before any of its body is read."""
    header = request.headers.get("authorization")
    if header is not None:
        sig = _from_header(request, header)
    elif "X-Amz-Signature" in request.query_params:
        sig = _from_query(request)
    elif "Signature" in request.query_params:
        raise _forbidden(
            "AccessDenied",
            f"only AWS Signature Version 4 ({_ALGORITHM}) is accepted here: presign with "
            "botocore Config(signature_version='s3v4')",
        )
    else:
        raise _forbidden(
            "AccessDenied",
            "this request is not signed: sign it (AWS SigV4) with credentials from "
            "GET /v1/blobs/credentials/train",
        )
    creds = _issued_credentials(sig.access_key)
    _check_time(sig)
    _check_headers(request, sig)
    if sig.token is None or not hmac.compare_digest(
        sig.token.encode(), creds.session_token.encode()
    ):
        raise _forbidden(
            "InvalidToken", "missing or wrong X-Amz-Security-Token for this access key"
        )
    if sig.expires_s is None:
        content_sha256(request)  # a payload hash this stand-in understands
    expected = _expected_signature(request, sig, creds)
    if not hmac.compare_digest(sig.signature.encode(), expected.encode()):
        raise _forbidden(
            "SignatureDoesNotMatch",
            "the request signature does not match: sign with the secret key issued with "
            "this access key, and do not alter the request after signing",
        )
    return creds


def content_sha256(request: Request) -> str | None:
    """The payload's declared sha256 (hex) when the signature covers the payload; None
    when it is unsigned (``UNSIGNED-PAYLOAD``, boto3's ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``
    or a presigned request); 400 for any other value."""
    value = request.headers.get("x-amz-content-sha256")
    if value is None or value in (UNSIGNED_PAYLOAD, STREAMING_UNSIGNED):
        return None
    if _HEX64.match(value):
        return value
    raise HttpError(
        400,
        "InvalidArgument",
        f"x-amz-content-sha256 {_quoted(value)} is not served here: send the payload's "
        f"sha256 (hex), {UNSIGNED_PAYLOAD} or {STREAMING_UNSIGNED}",
    )


def streaming(request: Request) -> bool:
    """Whether the body is ``aws-chunked`` framed (boto3 streams a checksum trailer)."""
    return request.headers.get("x-amz-content-sha256", "").startswith("STREAMING-") or (
        "aws-chunked" in request.headers.get("content-encoding", "")
    )
