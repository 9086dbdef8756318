"""Weights sources, mirrored as Baseten's delivery network (BDN) does: once, into a cache
reused by later jobs, while the job is CREATED and before its nodes start.

The cache is content-addressed: a folder per (source, revision, patterns) under
``<home>/weights/``, written to a temporary folder and renamed when complete, so a
mirror that was interrupted is never mistaken for a finished one. What the local
service mirrors: ``https://`` (one file), ``s3://bucket/prefix`` (every object under it;
the service's S3 endpoint in its Baseten stand-in mode, AWS otherwise) and ``hf://``
(Hugging Face's own download code). ``gs://``, ``azure://``, ``r2://`` and ``cw://`` are
refused when the job is created: only Baseten mirrors those.

Patterns are Unix shell-style, as BDN's: a file goes when it matches an
``allow_patterns`` entry (all do without any) and no ``ignore_patterns`` entry. An
``auth_secret_name`` names a secret of the service: a token for ``hf://`` and
``https://`` (a Bearer header), for ``s3://`` JSON with ``access_key_id``,
``secret_access_key`` and an optional ``region``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from bt_jupyter.errors import BtJupyterError
from bt_jupyter.spec import WeightsSource

#: Schemes the local service mirrors itself.
LOCAL_SCHEMES = ("hf://", "s3://", "https://")
#: In a cache folder: the files (what a node sees), and the list written once complete.
FILES, COMPLETE = "files", "complete.json"
#: A progress line at most this often while a mirror runs.
PROGRESS_EVERY_S = 1.0
Report = Callable[[str], None]


class WeightsError(BtJupyterError):
    """A weights source could not be mirrored (one line: which, and why)."""


def scheme_refusal(source: WeightsSource) -> str | None:
    """Why the local service cannot mirror this source (None when it can)."""
    if source.source.startswith(LOCAL_SCHEMES):
        return None
    scheme = source.source.split("://", 1)[0]
    return (
        f"weights {source.source}: {scheme}:// sources are mirrored by Baseten only; the "
        f"local service mirrors {', '.join(LOCAL_SCHEMES)} (push with --backend baseten)"
    )


def wanted(path: str, source: WeightsSource) -> bool:
    """BDN's filter: allowed (any, without allow_patterns) and not ignored."""
    base = PurePosixPath(path).name

    def matches(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(base, p) for p in patterns)

    allowed = source.allow_patterns is None or matches(source.allow_patterns)
    return allowed and not matches(source.ignore_patterns or [])


def cache_key(source: WeightsSource, revision: str = "") -> str:
    """The cache folder's name: what was asked for, and (hf) the revision resolved."""
    identity = {
        "source": source.source,
        "revision": revision,
        "allow": source.allow_patterns,
        "ignore": source.ignore_patterns,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class Mirror:
    """Mirrors weights sources into ``cache_root``; ``secret`` reads a secret by name."""

    def __init__(
        self,
        cache_root: Path,
        secret: Callable[[str], str | None],
        report: Report,
        s3_endpoint: str = "",
    ) -> None:
        self.root, self.secret, self.report, self.s3_endpoint = (
            cache_root,
            secret,
            report,
            s3_endpoint,
        )

    def mirror(self, source: WeightsSource) -> Path:
        """The folder holding the source's files (mirrored now, or found in the cache)."""
        token = self._token(source)
        revision = ""
        if source.source.startswith("hf://"):
            revision = self._hf_revision(source, token)
        target = self.root / cache_key(source, revision)
        if (target / COMPLETE).is_file():
            files = json.loads((target / COMPLETE).read_text())
            self.report(f"weights {source.source}: in the cache ({_describe(files)}), reused")
            return target / FILES
        self.root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
        into = partial / FILES
        into.mkdir()
        started = time.monotonic()
        try:
            if source.source.startswith("https://"):
                files = self._https(source, token, into)
            elif source.source.startswith("s3://"):
                files = self._s3(source, token, into)
            else:
                files = self._hf(source, token, revision, into)
            if not files:
                raise WeightsError(
                    f"weights {source.source}: no file matches allow_patterns "
                    f"{source.allow_patterns} / ignore_patterns {source.ignore_patterns}"
                )
            (partial / COMPLETE).write_text(json.dumps(files))
            try:
                partial.rename(target)
            except OSError:  # another job finished the same mirror first: use that one
                shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self.report(
            f"weights {source.source}: mirrored {_describe(files)} in "
            f"{time.monotonic() - started:.1f}s"
        )
        return target / FILES

    # ------------------------------------------------------------------ auth

    def _token(self, source: WeightsSource) -> str | None:
        name = source.auth_secret_name or (source.auth or {}).get("auth_secret_name")
        if not name:
            return None
        value = self.secret(str(name))
        if value is None:
            raise WeightsError(
                f"weights {source.source}: secret {name!r} is not set "
                f"(bt-jupyter secrets set {name})"
            )
        return value

    # ------------------------------------------------------------------ sources

    def _https(self, source: WeightsSource, token: str | None, into: Path) -> dict[str, int]:
        name = unquote(PurePosixPath(urlsplit(source.source).path).name) or "download"
        if not wanted(name, source):
            return {}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with httpx.stream(
                "GET", source.source, headers=headers, follow_redirects=True, timeout=60
            ) as response:
                if response.status_code >= 400:
                    hint = " (check auth_secret_name)" if response.status_code in (401, 403) else ""
                    raise WeightsError(
                        f"weights {source.source}: the server answered HTTP "
                        f"{response.status_code}{hint}"
                    )
                total = int(response.headers.get("content-length") or 0)
                progress = _Progress(self.report, source.source, total)
                with (into / name).open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                        progress.add(len(chunk))
        except httpx.HTTPError as exc:
            raise WeightsError(f"weights {source.source}: could not download: {exc}") from None
        return {name: (into / name).stat().st_size}

    def _s3(self, source: WeightsSource, token: str | None, into: Path) -> dict[str, int]:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, prefix = source.source.removeprefix("s3://").partition("/")
        options: dict[str, Any] = {}
        if token:
            try:
                creds = json.loads(token)
                options.update(
                    aws_access_key_id=creds["access_key_id"],
                    aws_secret_access_key=creds["secret_access_key"],
                    region_name=creds.get("region") or "us-east-1",
                )
            except (ValueError, KeyError, TypeError):
                raise WeightsError(
                    f"weights {source.source}: secret {source.auth_secret_name!r} must be JSON "
                    'with "access_key_id" and "secret_access_key" (and "region")'
                ) from None
        if self.s3_endpoint:
            options["endpoint_url"] = self.s3_endpoint
        try:
            s3 = boto3.client("s3", **options)
            objects = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                objects += page.get("Contents", [])
            chosen = []
            for obj in objects:
                relative = obj["Key"][len(prefix) :].lstrip("/") if prefix else obj["Key"]
                if relative and not relative.endswith("/") and wanted(relative, source):
                    chosen.append((obj["Key"], _safe_relative(relative, source), obj["Size"]))
            progress = _Progress(self.report, source.source, sum(s for _, _, s in chosen))
            for key, relative, size in chosen:
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(target))
                progress.add(size)
        except (BotoCoreError, ClientError) as exc:
            raise WeightsError(f"weights {source.source}: S3 said: {exc}") from None
        return {relative: size for _, relative, size in chosen}

    def _hf_revision(self, source: WeightsSource, token: str | None) -> str:
        """The commit the revision names now (so a moved branch mirrors anew)."""
        repo, revision = _hf_repo(source)
        try:
            from huggingface_hub import HfApi

            return str(HfApi().model_info(repo, revision=revision, token=token).sha or revision)
        except ImportError:
            raise WeightsError(
                "weights hf://: the local service needs huggingface_hub to mirror from the "
                "Hugging Face Hub (pip install huggingface_hub)"
            ) from None
        except Exception as exc:
            raise WeightsError(f"weights {source.source}: {_hub_problem(exc)}") from None

    def _hf(
        self, source: WeightsSource, token: str | None, revision: str, into: Path
    ) -> dict[str, int]:
        from huggingface_hub import snapshot_download

        repo, _ = _hf_repo(source)
        self.report(f"weights {source.source}: downloading from the Hugging Face Hub")
        try:
            snapshot_download(
                repo,
                revision=revision,
                token=token,
                local_dir=into,
                allow_patterns=source.allow_patterns,
                ignore_patterns=source.ignore_patterns,
            )
        except Exception as exc:
            raise WeightsError(f"weights {source.source}: {_hub_problem(exc)}") from None
        shutil.rmtree(into / ".cache", ignore_errors=True)  # the hub's own bookkeeping
        return {
            p.relative_to(into).as_posix(): p.stat().st_size
            for p in sorted(into.rglob("*"))
            if p.is_file()
        }


def _hf_repo(source: WeightsSource) -> tuple[str, str]:
    repo, _, revision = source.source.removeprefix("hf://").partition("@")
    return repo, revision or "main"


def _hub_problem(exc: Exception) -> str:
    """One line for what the hub said (or that it could not be reached)."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if "connect" in (name + text).lower() or "resolve" in text.lower():
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return f"the Hugging Face Hub ({endpoint}) could not be reached: {name}"
    return f"{name}: {text[:300]}"


def _safe_relative(relative: str, source: WeightsSource) -> str:
    """An object key below the prefix, as a path that stays inside the mirror."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("..", "") for part in parts) or relative.startswith("/"):
        raise WeightsError(f"weights {source.source}: object {relative!r} would land outside")
    return relative


def _describe(files: dict[str, int]) -> str:
    total = sum(files.values())
    return f"{len(files)} file{'s' if len(files) != 1 else ''}, {total / 1e6:.1f} MB"


class _Progress:
    """``weights SOURCE: 40% (1.2 of 3.0 GB)`` lines, at most one a second."""

    def __init__(self, report: Report, source: str, total: int) -> None:
        self.report, self.source, self.total = report, source, total
        self.done, self.said = 0, time.monotonic()

    def add(self, size: int) -> None:
        self.done += size
        if time.monotonic() - self.said >= PROGRESS_EVERY_S:
            self.said = time.monotonic()
            share = f"{100 * self.done / self.total:.0f}% " if self.total else ""
            of = f" of {self.total / 1e6:.1f}" if self.total else ""
            self.report(f"weights {self.source}: {share}({self.done / 1e6:.1f}{of} MB)")
