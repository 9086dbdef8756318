"""Where the local service keeps its state: ``$BT_JUPYTER_HOME`` (default ``~/.bt_jupyter``).

One place names every file and folder, so the service, the runner, the CLI and the tests
agree on them. Nothing here starts anything.
"""

from __future__ import annotations

import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

_ARTIFACT_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


def default_home() -> Path:
    return Path(os.environ.get("BT_JUPYTER_HOME") or Path.home() / ".bt_jupyter")


@dataclass(frozen=True)
class Home:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    @classmethod
    def default(cls) -> Home:
        return cls(default_home())

    @property
    def db(self) -> Path:
        return self.root / "state.db"

    @property
    def api_key_file(self) -> Path:
        return self.root / "api_key"

    @property
    def service_file(self) -> Path:
        """JSON with the running service's pid, port and url."""
        return self.root / "service.json"

    @property
    def service_log(self) -> Path:
        return self.root / "service.log"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def artifact_file(self, key: str) -> Path | None:
        """Where the artifact under ``key`` (``sha.tar``, ``training/ID/bundle.tar``) is
        kept; None for a key that cannot name one (empty, too long, hidden or ``..`` parts)."""
        if len(key) > 300 or not _ARTIFACT_KEY.match(key):
            return None
        return self.artifacts / urllib.parse.quote(key, safe="")

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def project_cache(self, project_id: str) -> Path:
        return self.root / "cache" / "projects" / project_id

    def team_cache(self, team: str | None) -> Path:
        return self.root / "cache" / "teams" / (team or "default")

    def ensure(self) -> Home:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (self.artifacts, self.root / "jobs"):
            folder.mkdir(exist_ok=True)
        return self

    def api_key(self) -> str:
        """The service's API key, created on first use, readable by this user only."""
        self.ensure()
        try:
            return self.api_key_file.read_text().strip()
        except FileNotFoundError:
            pass
        tmp = self.root / f".api_key.{os.getpid()}"
        write_private(tmp, secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, self.api_key_file)  # first writer wins, even across processes
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return self.api_key_file.read_text().strip()


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner can read (0600), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
