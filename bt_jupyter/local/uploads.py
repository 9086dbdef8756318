"""Receiving an artifact: streamed to a temporary file, size-capped, hashed, then moved in
whole, so a half-sent bundle never becomes an artifact a job could start from."""

from __future__ import annotations

import hashlib
import os
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


async def aws_chunked(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The payload of an ``aws-chunked`` body (``size;ext\\r\\n data\\r\\n ... 0\\r\\n
    trailers``), which boto3 sends when it streams a checksum after the data."""
    buffer, crlf_due = b"", False
    remaining: int | None = None  # data left in the current chunk; None: in a header
    async for piece in chunks:
        buffer += piece
        while buffer:
            if crlf_due:
                if len(buffer) < 2:
                    break
                buffer, crlf_due = buffer[2:], False
            elif remaining is None:
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                remaining = int(buffer[:end].split(b";")[0], 16)
                buffer = buffer[end + 2 :]
                if remaining == 0:
                    return  # what follows are trailers (checksums)
            else:
                take = min(len(buffer), remaining)
                yield buffer[:take]
                buffer, remaining = buffer[take:], remaining - take
                if remaining == 0:
                    remaining, crlf_due = None, True
