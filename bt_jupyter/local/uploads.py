"""Receiving an artifact: streamed to a temporary file, size-capped, hashed, then moved in
whole, so a half-sent bundle never becomes an artifact a job could start from."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bt_jupyter.local.store import new_id
from bt_jupyter.local.wire import HttpError


@dataclass(frozen=True)
class Received:
    size: int
    sha256: str
    md5: str  # S3's ETag of a single-part object


def too_large(size: int, limit: int) -> str:
    return (
        f"artifact is {_bytes(size)}, over the {_bytes(limit)} limit; keep data out of the "
        "bundle (use the cache dir) or raise BT_JUPYTER_MAX_ARTIFACT_BYTES"
    )


def _bytes(size: float) -> str:
    """``5000 bytes``, ``12.3 MiB``: exact for small sizes, readable for large ones."""
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


async def save_stream(
    chunks: AsyncIterator[bytes], path: Path, limit: int, expect_sha256: str | None = None
) -> Received:
    """Write ``chunks`` to ``path``; 413 past ``limit`` bytes, 400 if the content's
    sha256 is not ``expect_sha256``. Nothing is left behind on failure."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    tmp = path.with_name(f".{path.name}.{new_id()}.part")
    try:
        with tmp.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, "TOO_LARGE", too_large(size, limit))
                sha.update(chunk)
                md5.update(chunk)
                out.write(chunk)
        if expect_sha256 and expect_sha256 != sha.hexdigest():
            raise HttpError(
                400, "DIGEST_MISMATCH", f"{path.name}: content sha256 is {sha.hexdigest()}"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Received(size, sha.hexdigest(), md5.hexdigest())


#: Longest chunk header (``size;chunk-signature=...``) an ``aws-chunked`` body may have.
MAX_CHUNK_HEADER = 4096
_CHUNK_SIZE = re.compile(rb"^[0-9a-fA-F]{1,16}$")


def _bad_chunking(problem: str) -> HttpError:
    return HttpError(400, "IncompleteBody", f"malformed aws-chunked body: {problem}")


def _chunk_size(header: bytes) -> int:
    """The data size a chunk header (``size[;extension]``) announces, in hex."""
    size = header.split(b";", 1)[0].strip()
    if not _CHUNK_SIZE.match(size):
        raise _bad_chunking(f"chunk size {size[:20]!r} is not a hexadecimal number")
    return int(size, 16)


async def aws_chunked(
    chunks: AsyncIterator[bytes], decoded_length: int | None = None
) -> AsyncIterator[bytes]:
    """The payload of an ``aws-chunked`` body (``size;ext\\r\\n data\\r\\n ... 0\\r\\n
    trailers``), which boto3 sends when it streams a checksum after the data. 400 for a
    malformed or cut-off body, or one whose payload is not ``decoded_length`` bytes
    (``x-amz-decoded-content-length``), so such a body is never stored."""
    buffer = bytearray()
    remaining: int | None = None  # data left in the current chunk; None: in a header
    crlf_due, total = False, 0
    async for piece in chunks:
        buffer += piece
        while buffer:
            if crlf_due:
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise _bad_chunking("chunk data is not followed by CRLF")
                del buffer[:2]
                crlf_due = False
            elif remaining is None:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_CHUNK_HEADER:
                        raise _bad_chunking(f"chunk header over {MAX_CHUNK_HEADER} bytes")
                    break
                remaining = _chunk_size(bytes(buffer[:end]))
                del buffer[: end + 2]
                if remaining == 0:
                    _check_length(total, decoded_length)
                    return  # what follows are trailers (checksums)
            else:
                take = min(len(buffer), remaining)
                yield bytes(buffer[:take])
                del buffer[:take]
                total, remaining = total + take, remaining - take
                if remaining == 0:
                    remaining, crlf_due = None, True
    raise _bad_chunking("the body ended before its final 0-size chunk")


def _check_length(total: int, decoded_length: int | None) -> None:
    if decoded_length is not None and total != decoded_length:
        raise _bad_chunking(
            f"{total} bytes of data, but x-amz-decoded-content-length says {decoded_length}"
        )
