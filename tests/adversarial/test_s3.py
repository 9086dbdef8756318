"""Issue 14, items 8 (S3) and 11: the S3 stand-in takes only requests signed (AWS SigV4)
with a secret it issued, bad S3 input is one clear 4xx that stores nothing, and presigned
download URLs expire and die with the service instance that made them.

Requests are signed here with botocore's own signer and sent with ``http.client``, so the
path and query reach the service byte for byte as signed (``..``, ``%00`` included).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from bt_jupyter import api
from bt_jupyter.client import ApiClient
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from tests.adversarial.checks import assert_one_clear_line, assert_refused, unchanged
from tests.helpers import bundle, running_service, submit, wait_for, wait_terminal

boto3 = pytest.importorskip("boto3")
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

BUCKET = api.LOCAL_ARTIFACT_BUCKET
REGION = "us-east-1"


# ----------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class Req:
    """One S3 request: the raw path (with query) as sent, its headers and body."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@pytest.fixture(scope="module")
def creds(client: ApiClient) -> api.AWSCredentialsV1:
    issued = client.blob_credentials().creds
    assert issued.endpoint_url
    return issued


def _endpoint(creds: api.AWSCredentialsV1) -> tuple[str, str]:
    """(host:port, path prefix) of the S3 stand-in."""
    assert creds.endpoint_url
    parts = urlsplit(creds.endpoint_url)
    return parts.netloc, parts.path


def sign(
    creds: api.AWSCredentialsV1,
    method: str,
    key: str,
    query: str = "",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    sha256: str | None = None,
    secret: str | None = None,
    access_key: str | None = None,
    token: str | None = "issued",
    service: str = "s3",
    shift: timedelta = timedelta(0),
    bucket: str = BUCKET,
) -> Req:
    """A request signed by botocore (``S3SigV4Auth``), optionally with wrong parts."""
    netloc, prefix = _endpoint(creds)
    target = f"{prefix}/{bucket}/{key}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=f"http://{netloc}{target}", data=body)
    for name, value in (headers or {}).items():
        request.headers[name] = value
    signer = S3SigV4Auth(
        Credentials(
            access_key or creds.aws_access_key_id,
            secret or creds.aws_secret_access_key,
            creds.aws_session_token if token == "issued" else token,
        ),
        service,
        REGION,
    )
    if sha256 is not None:  # what the request declares in x-amz-content-sha256
        signer.payload = lambda _: sha256
    now = datetime.now(timezone.utc).replace(tzinfo=None) + shift
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        signer.add_auth(request)
    return Req(method, target, {k: str(v) for k, v in request.headers.items()}, body)


@dataclass(frozen=True)
class Answer:
    status: int
    code: str
    message: str
    headers: dict[str, str]


def send(creds: api.AWSCredentialsV1, req: Req) -> Answer:
    """Send ``req`` as is (no normalising of its path or query) and read S3's answer."""
    netloc, _ = _endpoint(creds)
    conn = http.client.HTTPConnection(netloc, timeout=30)
    try:
        conn.request(req.method, req.target, body=req.body, headers=req.headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    code = message = ""
    if raw.startswith(b"<Error>"):
        root = ET.fromstring(raw)
        code, message = root.findtext("Code") or "", root.findtext("Message") or ""
    return Answer(response.status, code, message, dict(response.getheaders()))


def refused(answer: Answer, status: int, code: str, *mentions: str) -> None:
    """S3's XML error with ``code`` and one clear line naming ``mentions``; never a 5xx."""
    assert answer.status < 500, answer
    assert (answer.status, answer.code) == (status, code), answer
    assert_one_clear_line(answer.message, *mentions)


def _key() -> str:
    return f"training/{new_id(12)}/bundle.tar"


def _stored(home: Home, key: str) -> bool:
    path = home.artifact_file(key)
    return path is not None and path.exists()


# ----------------------------------------------------------------------------- what works


def test_boto3_uploads_and_heads_with_issued_credentials(
    creds: api.AWSCredentialsV1, local_home: Home
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=creds.endpoint_url,
        region_name=REGION,
        aws_access_key_id=creds.aws_access_key_id,
        aws_secret_access_key=creds.aws_secret_access_key,
        aws_session_token=creds.aws_session_token,
    )
    key = _key()
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"signed by boto3")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 15
    path = local_home.artifact_file(key)
    assert path is not None
    assert path.read_bytes() == b"signed by boto3"
    url = _presigned(creds, key)
    assert httpx.put(url, content=b"presigned").status_code == 200
    assert path.read_bytes() == b"presigned"


def test_a_signed_request_built_here_is_taken(
    creds: api.AWSCredentialsV1, local_home: Home
) -> None:
    """The signing helper of this module is right, so its refusals below mean something."""
    key = _key()
    assert send(creds, sign(creds, "PUT", key, body=b"ok")).status == 200
    assert _stored(local_home, key)


# ----------------------------------------------------------------------------- signatures


def _drop(name: str) -> Callable[[Req], Req]:
    def change(req: Req) -> Req:
        return replace(req, headers={k: v for k, v in req.headers.items() if k.lower() != name})

    return change


def _set(name: str, value: str) -> Callable[[Req], Req]:
    def change(req: Req) -> Req:
        return replace(req, headers={**_drop(name)(req).headers, name: value})

    return change


def _garbage_signature(req: Req) -> Req:
    auth = req.headers["Authorization"]
    return _set("authorization", auth[: auth.index("Signature=")] + "Signature=" + "0" * 64)(req)


def _no_signed_headers(req: Req) -> Req:
    parts = [p for p in req.headers["Authorization"].split(", ") if "SignedHeaders" not in p]
    return _set("authorization", ", ".join(parts))(req)


def _other_key(req: Req) -> Req:
    return replace(req, target=req.target.replace("/bundle.tar", "/other.tar"))


def _other_body(req: Req) -> Req:
    return replace(
        req, body=b"not what was signed", headers={**req.headers, "Content-Length": "19"}
    )


_KEEP: Callable[[Req], Req] = lambda req: req  # noqa: E731
_MIN20 = timedelta(minutes=20)

# (id, how to sign, how to change it after signing, status, S3 code, words of the message)
SIGNATURE_CASES: list[tuple[str, dict[str, object], Callable[[Req], Req], int, str, str]] = [
    ("garbage-signature", {}, _garbage_signature, 403, "SignatureDoesNotMatch", "secret"),
    ("wrong-secret", {"secret": "x" * 40}, _KEEP, 403, "SignatureDoesNotMatch", "secret"),
    ("access-key-not-issued", {"access_key": "LOCALNOTISSUED1"}, _KEEP, 403,
     "InvalidAccessKeyId", "not issued"),
    ("no-authorization", {}, _drop("authorization"), 403, "AccessDenied", "not signed"),
    ("signature-v2", {}, _set("authorization", "AWS LOCALX:c2lnbmF0dXJl"), 403,
     "AccessDenied", "Version 4"),
    ("authorization-without-signedheaders", {}, _no_signed_headers, 403, "AccessDenied",
     "SignedHeaders"),
    ("scope-of-another-service", {"service": "ec2"}, _KEEP, 403, "AccessDenied", "scope"),
    ("signed-20-min-ago", {"shift": -_MIN20}, _KEEP, 403, "RequestTimeTooSkewed", "clock"),
    ("signed-20-min-ahead", {"shift": _MIN20}, _KEEP, 403, "RequestTimeTooSkewed", "clock"),
    ("x-amz-date-not-a-date", {}, _set("x-amz-date", "yesterday"), 403, "AccessDenied",
     "X-Amz-Date"),
    ("x-amz-date-missing", {}, _drop("x-amz-date"), 403, "AccessDenied", "x-amz-date"),
    ("content-sha256-missing", {}, _drop("x-amz-content-sha256"), 403, "AccessDenied",
     "x-amz-content-sha256"),
    ("wrong-session-token", {"token": "other-token"}, _KEEP, 403, "InvalidToken", "token"),
    ("no-session-token", {"token": None}, _KEEP, 403, "InvalidToken", "token"),
    ("body-changed-after-signing", {}, _other_body, 400, "XAmzContentSHA256Mismatch",
     "sha256"),
    ("payload-hash-changed-after-signing", {}, _set("x-amz-content-sha256",
     "UNSIGNED-PAYLOAD"), 403, "SignatureDoesNotMatch", "alter"),
    ("key-changed-after-signing", {}, _other_key, 403, "SignatureDoesNotMatch", "alter"),
    ("unsigned-amz-header-added", {}, _set("x-amz-meta-owner", "eve"), 403, "AccessDenied",
     "x-amz-meta-owner"),
    ("unknown-payload-hash", {"sha256": "SOMETHING-ELSE"}, _KEEP, 400, "InvalidArgument",
     "x-amz-content-sha256"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("how", "change", "status", "code", "mention"),
    [pytest.param(*case[1:], id=case[0]) for case in SIGNATURE_CASES],
)
def test_a_request_not_signed_with_the_issued_secret_is_refused(
    creds: api.AWSCredentialsV1,
    local_home: Home,
    how: dict[str, object],
    change: Callable[[Req], Req],
    status: int,
    code: str,
    mention: str,
) -> None:
    key = _key()
    req = change(sign(creds, "PUT", key, body=b"payload", **how))  # type: ignore[arg-type]
    with unchanged(local_home):
        refused(send(creds, req), status, code, mention)
    assert not _stored(local_home, key)


def _presigned(
    creds: api.AWSCredentialsV1, key: str, expires_in: int = 60, version: str = "s3v4", **kw: str
) -> str:
    """A presigned PutObject URL, by boto3 (SigV4 unless ``version`` says otherwise)."""
    s3 = boto3.client(
        "s3",
        config=Config(signature_version=version),
        endpoint_url=creds.endpoint_url,
        region_name=REGION,
        aws_access_key_id=kw.get("access_key", creds.aws_access_key_id),
        aws_secret_access_key=kw.get("secret", creds.aws_secret_access_key),
        aws_session_token=creds.aws_session_token,
    )
    url: str = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires_in
    )
    return url


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    pairs = dict(parse_qsl(parts.query, keep_blank_values=True))
    pairs.update({k: v for k, v in changes.items() if v is not None})
    for name in [k for k, v in changes.items() if v is None]:
        pairs.pop(name, None)
    return parts._replace(query=urlencode(pairs)).geturl()


PRESIGNED_CASES: list[tuple[str, Callable[[api.AWSCredentialsV1, str], str], str, str]] = [
    ("garbage-signature",
     lambda c, k: _with_query(_presigned(c, k), **{"X-Amz-Signature": "0" * 64}),
     "SignatureDoesNotMatch", "secret"),
    ("wrong-secret", lambda c, k: _presigned(c, k, secret="y" * 40),
     "SignatureDoesNotMatch", "secret"),
    ("expiry-extended", lambda c, k: _with_query(_presigned(c, k), **{"X-Amz-Expires": "600"}),
     "SignatureDoesNotMatch", "alter"),
    ("expiry-over-a-week",
     lambda c, k: _with_query(_presigned(c, k), **{"X-Amz-Expires": "604801"}),
     "AccessDenied", "X-Amz-Expires"),
    ("no-algorithm", lambda c, k: _with_query(_presigned(c, k), **{"X-Amz-Algorithm": None}),
     "AccessDenied", "X-Amz-Algorithm"),
    ("no-token",
     lambda c, k: _with_query(_presigned(c, k), **{"X-Amz-Security-Token": None}),
     "InvalidToken", "token"),
    ("signature-v2", lambda c, k: _presigned(c, k, version="s3"), "AccessDenied", "Version 4"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "code", "mention"),
    [pytest.param(*case[1:], id=case[0]) for case in PRESIGNED_CASES],
)
def test_a_bad_presigned_s3_url_is_refused(
    creds: api.AWSCredentialsV1,
    local_home: Home,
    make: Callable[[api.AWSCredentialsV1, str], str],
    code: str,
    mention: str,
) -> None:
    key = _key()
    url = urlsplit(make(creds, key))
    with unchanged(local_home):
        answer = send(creds, Req("PUT", f"{url.path}?{url.query}", {}, b"x"))
        refused(answer, 403, code, mention)
    assert not _stored(local_home, key)


def test_an_expired_presigned_s3_url_is_refused(
    creds: api.AWSCredentialsV1, local_home: Home
) -> None:
    key = _key()
    an_hour_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    with mock.patch("botocore.auth.get_current_datetime", return_value=an_hour_ago):
        url = urlsplit(_presigned(creds, key, expires_in=60))
    with unchanged(local_home):
        refused(send(creds, Req("PUT", f"{url.path}?{url.query}", {}, b"x")), 403,
                "AccessDenied", "expired")  # fmt: skip


# ----------------------------------------------------------------------------- bad S3 input


@pytest.fixture
def upload(creds: api.AWSCredentialsV1, local_home: Home) -> Iterator[tuple[str, str, Path]]:
    """A multipart upload with part 1 uploaded: (key, upload id, its parts folder)."""
    key = _key()
    answer_body = _raw(creds, sign(creds, "POST", key, "uploads="))
    upload_id = ET.fromstring(answer_body).findtext("UploadId") or ""
    assert upload_id
    part = send(creds, sign(creds, "PUT", key, f"partNumber=1&uploadId={upload_id}", b"p1"))
    assert part.status == 200, part
    folder = local_home.artifacts / f".multipart-{upload_id}"
    assert folder.is_dir()
    yield key, upload_id, folder
    send(creds, sign(creds, "DELETE", key, f"uploadId={upload_id}"))


def _raw(creds: api.AWSCredentialsV1, req: Req) -> bytes:
    netloc, _ = _endpoint(creds)
    conn = http.client.HTTPConnection(netloc, timeout=30)
    try:
        conn.request(req.method, req.target, body=req.body, headers=req.headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "number",
    ["abc", "-1", "0", "10001", str(2**70), "1.5", "", "%00", "%C2%B2", "%EF%BC%91"],
    ids=[
        "letters",
        "negative",
        "zero",
        "over-10000",
        "2**70",
        "fraction",
        "empty",
        "nul",
        "superscript-two",
        "fullwidth-one",
    ],
)
def test_a_bad_part_number_is_refused(
    creds: api.AWSCredentialsV1, local_home: Home, upload: tuple[str, str, Path], number: str
) -> None:
    key, upload_id, folder = upload
    req = sign(creds, "PUT", key, f"partNumber={number}&uploadId={upload_id}", b"part")
    with unchanged(local_home):
        refused(send(creds, req), 400, "InvalidArgument", "partNumber", "10000")
    assert sorted(p.name for p in folder.iterdir()) == ["00001"]


BAD_UPLOAD_IDS = {
    "dot-dot-slash": "..%2F..%2Fjobs",
    "dot-dot": "..",
    "nul": "abc%00def",
    "never-started": "nosuchupload0000",
    "too-long": "a" * 100,
    "upper-case": "ABCDEF",
}


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE"])
@pytest.mark.parametrize("upload_id", BAD_UPLOAD_IDS.values(), ids=BAD_UPLOAD_IDS.keys())
def test_an_upload_id_not_started_here_is_no_such_upload(
    creds: api.AWSCredentialsV1, local_home: Home, method: str, upload_id: str
) -> None:
    key = _key()
    query = f"partNumber=1&uploadId={upload_id}" if method == "PUT" else f"uploadId={upload_id}"
    body = b"<CompleteMultipartUpload/>" if method == "POST" else b""
    with unchanged(local_home):
        refused(send(creds, sign(creds, method, key, query, body)), 404, "NoSuchUpload",
                "CreateMultipartUpload")  # fmt: skip
    assert not _stored(local_home, key)


def _complete(*numbers: str) -> bytes:
    parts = "".join(f"<Part><ETag>x</ETag><PartNumber>{n}</PartNumber></Part>" for n in numbers)
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()


BAD_COMPLETIONS: dict[str, tuple[bytes, str, str]] = {
    "cut-off-xml": (b"<CompleteMultipartUpload><Part>", "MalformedXML", "not XML"),
    "binary": (b"\x00\xff\xfe", "MalformedXML", "not XML"),
    "empty": (b"", "MalformedXML", "not XML"),
    "other-root": (b"<Delete><Part/></Delete>", "MalformedXML", "CompleteMultipartUpload"),
    "no-parts": (b"<CompleteMultipartUpload/>", "MalformedXML", "no <Part>"),
    "part-number-letters": (_complete("abc"), "InvalidArgument", "partNumber"),
    "part-number-zero": (_complete("0"), "InvalidArgument", "partNumber"),
    "part-number-huge": (_complete(str(2**80)), "InvalidArgument", "partNumber"),
    "parts-out-of-order": (_complete("2", "1"), "InvalidPartOrder", "ascending"),
    "part-twice": (_complete("1", "1"), "InvalidPartOrder", "ascending"),
    "part-never-uploaded": (_complete("1", "2"), "InvalidPart", "part 2"),
    "entity-expansion": (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<CompleteMultipartUpload><Part><PartNumber>&b;</PartNumber></Part>"
        b"</CompleteMultipartUpload>",
        "InvalidArgument",
        "partNumber",
    ),
    "over-4-mib": (b"<CompleteMultipartUpload>" + b" " * (4 << 20), "MalformedXML", "bytes"),
}


@pytest.mark.parametrize(
    ("body", "code", "mention"), BAD_COMPLETIONS.values(), ids=BAD_COMPLETIONS.keys()
)
def test_a_bad_completion_is_refused_and_leaves_no_parts(
    creds: api.AWSCredentialsV1,
    local_home: Home,
    upload: tuple[str, str, Path],
    body: bytes,
    code: str,
    mention: str,
) -> None:
    key, upload_id, folder = upload
    answer = send(creds, sign(creds, "POST", key, f"uploadId={upload_id}", body))
    refused(answer, 400, code, mention, "aborted")
    assert not folder.exists()  # the upload ended: its parts are gone
    assert not _stored(local_home, key)


def _chunked(creds: api.AWSCredentialsV1, key: str, body: bytes, decoded: int) -> Req:
    """A PutObject whose body is ``aws-chunked`` framed, as boto3 sends with a trailer."""
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(decoded),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    return sign(creds, "PUT", key, body=body, headers=headers,
                sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER")  # fmt: skip


GOOD_CHUNKED = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n"
BAD_CHUNKED: dict[str, tuple[bytes, int, str]] = {
    "size-not-hex": (b"zz\r\nabc\r\n0\r\n\r\n", 3, "hexadecimal"),
    "size-negative": (b"-3\r\nabc\r\n0\r\n\r\n", 3, "hexadecimal"),
    "size-0x-prefixed": (b"0x3\r\nabc\r\n0\r\n\r\n", 3, "hexadecimal"),
    "size-empty": (b"\r\nabc\r\n0\r\n\r\n", 3, "hexadecimal"),
    "size-over-64-bits": (b"1" + b"0" * 20 + b"\r\nabc\r\n0\r\n\r\n", 3, "hexadecimal"),
    "no-crlf-after-data": (b"3\r\nabcXY0\r\n\r\n", 3, "CRLF"),
    "cut-off-in-data": (b"10\r\nabc", 16, "ended"),
    "no-final-chunk": (b"3\r\nabc\r\n", 3, "ended"),
    "header-without-end": (b"1" * 5000, 3, "header"),
    "decoded-length-wrong": (GOOD_CHUNKED, 99, "x-amz-decoded-content-length"),
}


@pytest.mark.parametrize(
    ("body", "decoded", "mention"), BAD_CHUNKED.values(), ids=BAD_CHUNKED.keys()
)
def test_a_malformed_aws_chunked_body_is_refused_and_stores_nothing(
    creds: api.AWSCredentialsV1, local_home: Home, body: bytes, decoded: int, mention: str
) -> None:
    key = _key()
    with unchanged(local_home):
        refused(send(creds, _chunked(creds, key, body, decoded)), 400, "IncompleteBody",
                "aws-chunked", mention)  # fmt: skip
    assert not _stored(local_home, key)
    assert not list(local_home.artifacts.glob("**/*.part"))


def test_a_well_formed_aws_chunked_body_is_stored(
    creds: api.AWSCredentialsV1, local_home: Home
) -> None:
    key = _key()
    assert send(creds, _chunked(creds, key, GOOD_CHUNKED, 3)).status == 200
    path = local_home.artifact_file(key)
    assert path is not None
    assert path.read_bytes() == b"abc"


BAD_KEYS = {
    "dot-dot-encoded": "..%2F..%2Fapi_key",
    "dot-dot-segment": "training/../../api_key",
    "nul": "training/x%00y/bundle.tar",
    "hidden": ".multipart-x",
    "empty-part": "training//bundle.tar",
    "too-long": "k" * 301,
    "space": "training/a%20b.tar",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_key_that_is_no_object_key_is_refused(
    creds: api.AWSCredentialsV1, local_home: Home, key: str
) -> None:
    with unchanged(local_home):
        refused(send(creds, sign(creds, "PUT", key, body=b"x")), 400, "InvalidArgument",
                "not a valid object key")  # fmt: skip


MISC: dict[str, tuple[Callable[[api.AWSCredentialsV1], Req], int, str, str]] = {
    "other-bucket": (lambda c: sign(c, "PUT", "k.tar", body=b"x", bucket="someone-else"), 404,
                     "NoSuchBucket", BUCKET),
    "post-without-uploads-or-id": (lambda c: sign(c, "POST", "k.tar", body=b""), 400,
                                   "InvalidRequest", "uploadId"),
    "delete-object": (lambda c: sign(c, "DELETE", "k.tar"), 405, "MethodNotAllowed",
                      "uploadId"),
    "decoded-length-superscript": (
        lambda c: sign(c, "PUT", "k.tar", body=GOOD_CHUNKED, headers={
            "content-encoding": "aws-chunked", "x-amz-decoded-content-length": "\u00b3"},
            sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        400, "InvalidArgument", "x-amz-decoded-content-length"),
    "decoded-length-not-a-number": (
        lambda c: sign(c, "PUT", "k.tar", body=GOOD_CHUNKED, headers={
            "content-encoding": "aws-chunked", "x-amz-decoded-content-length": "three"},
            sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        400, "InvalidArgument", "x-amz-decoded-content-length"),
    "signed-streaming-payload": (
        lambda c: sign(c, "PUT", "k.tar", body=b"x",
                       sha256="STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        400, "InvalidArgument", "UNSIGNED-PAYLOAD"),
}  # fmt: skip


@pytest.mark.parametrize(("make", "status", "code", "mention"), MISC.values(), ids=MISC.keys())
def test_an_unserved_s3_request_is_one_clear_refusal(
    creds: api.AWSCredentialsV1,
    local_home: Home,
    make: Callable[[api.AWSCredentialsV1], Req],
    status: int,
    code: str,
    mention: str,
) -> None:
    with unchanged(local_home):
        refused(send(creds, make(creds)), status, code, mention)


# ----------------------------------------------------------------------------- download URLs


@pytest.fixture(scope="module")
def artifact_url(client: ApiClient) -> tuple[str, bytes]:
    """A presigned download URL of a job's bundle (and the bundle's bytes)."""
    files = {"train.py": f"print('{new_id()}')"}
    project = client.upsert_project(f"s3-signatures-{new_id()}")
    job = submit(client, project, ["true"], files)
    data = bundle(files)  # the same bytes submit uploaded (bundles are reproducible)
    [url] = client.job_artifact_urls(project.id, job.id)
    wait_terminal(client, job)  # ended: the cases below see no job change on its own
    return url, data


def test_a_presigned_download_url_works_and_carries_its_expiry(
    artifact_url: tuple[str, bytes],
) -> None:
    url, data = artifact_url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data
    expires = int(dict(parse_qsl(urlsplit(url).query))["expires"])
    assert 3500 < expires - time.time() <= 3600  # the default: an hour


def _altered_path(url: str) -> str:
    """The same URL naming another key: the digest's last digit changed (it may be a 0 already)."""
    parts = urlsplit(url)
    stem, suffix = parts.path.rsplit(".", 1)
    altered = parts._replace(path=f"{_flip(stem)}.{suffix}").geturl()
    assert altered != url
    return altered


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


ALTERED_DOWNLOADS: dict[str, Callable[[str, dict[str, str]], str]] = {
    "other-path": lambda url, q: _altered_path(url),
    "expiry-extended": lambda url, q: _with_query(url, expires=str(int(q["expires"]) + 3600)),
    "expiry-far-future": lambda url, q: _with_query(url, expires="9" * 12),
    "expiry-not-a-number": lambda url, q: _with_query(url, expires="soon"),
    "expiry-too-long": lambda url, q: _with_query(url, expires="9" * 40),
    "expiry-superscript-digits": lambda url, q: _with_query(url, expires="\u00b2" * 10),
    "no-expiry": lambda url, q: _with_query(url, expires=None),
    "signature-altered": lambda url, q: _with_query(url, sig=_flip(q["sig"])),
    "no-signature": lambda url, q: _with_query(url, sig=None),
    "signature-of-another-length": lambda url, q: _with_query(url, sig=q["sig"] + "00"),
    "signature-by-the-api-key-without-expiry": lambda url, q: _with_query(
        url, expires=None, sig=hashlib.sha256(b"guess").hexdigest()
    ),
}


@pytest.mark.parametrize("alter", ALTERED_DOWNLOADS.values(), ids=ALTERED_DOWNLOADS.keys())
def test_an_altered_download_url_is_refused(
    artifact_url: tuple[str, bytes], local_home: Home, alter: Callable[[str, dict[str, str]], str]
) -> None:
    url, _ = artifact_url
    query = dict(parse_qsl(urlsplit(url).query))
    with unchanged(local_home):
        assert_refused(httpx.get(alter(url, query)), "signature", status=403)


def test_a_download_url_expires(tmp_path: Path) -> None:
    """Made to live 1 second (``BT_JUPYTER_PRESIGNED_URL_TTL_S``), it is refused after."""
    home = Home(tmp_path / "home")
    with (
        _queued_service(home, BT_JUPYTER_PRESIGNED_URL_TTL_S="1") as info,
        ApiClient(info.url, info.api_key) as client,
    ):
        url, project_id, job_id = _queued_job_url(client)
        assert int(dict(parse_qsl(urlsplit(url).query))["expires"]) <= time.time() + 1

        def refused_now() -> httpx.Response | None:
            response = httpx.get(url)
            return response if response.status_code == 403 else None

        assert_refused(
            wait_for(refused_now, 10, "the URL to expire"), "expired", "new URL", status=403
        )
        client.stop_job(project_id, job_id)


def test_a_download_url_dies_with_the_service_that_made_it(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with _queued_service(home) as info, ApiClient(info.url, info.api_key) as client:
        url, project_id, job_id = _queued_job_url(client)
        assert httpx.get(url).status_code == 200
        client.stop_job(project_id, job_id)  # not released to run by the next service
        old_creds = client.blob_credentials().creds
        assert send(old_creds, sign(old_creds, "PUT", _key(), body=b"x")).status == 200
    with _queued_service(home) as info, ApiClient(info.url, info.api_key) as client:
        parts = urlsplit(url)
        again = httpx.get(f"{info.url.rstrip('/')}{parts.path}?{parts.query}")
        assert_refused(again, "signature", "earlier run of the service", status=403)
        # blob credentials die with it too
        here = client.blob_credentials().creds.endpoint_url
        old_creds = old_creds.model_copy(update={"endpoint_url": here})
        refused(send(old_creds, sign(old_creds, "PUT", _key(), body=b"x")), 403,
                "InvalidAccessKeyId", "not issued")  # fmt: skip


def test_an_upload_abandoned_for_a_day_is_dropped_when_the_next_starts(
    creds: api.AWSCredentialsV1, local_home: Home
) -> None:
    stale = local_home.artifacts / ".multipart-abandoned0"
    stale.mkdir()
    (stale / "00001").write_bytes(b"old part")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    key = _key()
    created = _raw(creds, sign(creds, "POST", key, "uploads="))
    upload_id = ET.fromstring(created).findtext("UploadId")
    assert not stale.exists()
    assert (local_home.artifacts / f".multipart-{upload_id}").is_dir()
    send(creds, sign(creds, "DELETE", key, f"uploadId={upload_id}"))


@contextmanager
def _queued_service(home: Home, **env: str) -> Iterator[daemon.ServiceInfo]:
    """A service in baseten mode whose jobs wait an hour in the queue (nothing runs)."""
    queued = {"BT_JUPYTER_SERVICE_MODE": "baseten", "BT_JUPYTER_SERVICE_QUEUE_S": "3600"}
    with running_service(home, 0, **queued, **env) as info:
        yield info


def _queued_job_url(client: ApiClient) -> tuple[str, str, str]:
    """The bundle URL of a job that waits in the queue (so nothing runs)."""
    project = client.upsert_project("signatures")
    job = submit(client, project, ["true"], {"train.py": "print(1)"})
    [url] = client.job_artifact_urls(project.id, job.id)
    return url, project.id, job.id
