"""Where the local service keeps its state: ``$BT_JUPYTER_HOME`` (default ``~/.bt_jupyter``).

One place names every file and folder, so the service, the runner, the CLI and the tests
agree on them. Nothing here starts anything.

The home holds the service's key, the secrets, notebook data (``namespace.pkl``) and
checkpoints, so it is private: :meth:`Home.ensure` makes the folder 0700 and takes the
group and other bits off everything bt_jupyter keeps in it (an existing 0755 home
included), and refuses a folder that cannot be made private. Every path named after
something from outside (a team, project, job or checkpoint name) is one plain name and
stays under its folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import stat
import tarfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bt_jupyter import limits
from bt_jupyter.errors import HomeError, UnsafePathError

_ARTIFACT_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
#: What a file system allows in one name: no separator, no NUL, at most 255 bytes. Control
#: characters are refused too: they make names that no message can show.
_MAX_NAME_BYTES = 255
#: Group and other permission bits: what "private" takes off.
_SHARED_BITS = 0o077
#: Made once everything under the home has been made private (an older version's home
#: may hold 0644 files under a 0700 folder).
_PRIVATE_MARK = ".private"
#: What bt_jupyter keeps in a home. Only these are tightened: a home pointed at a folder
#: that holds other things (even ``~``) keeps those as they are, behind its 0700.
_OWN_FILES = (
    "state.db", "state.db-wal", "state.db-shm", "state.db-journal", "api_key",
    "secrets.json", "service.json", "service.log", "service.lock", "runner-standby.log",
)  # fmt: skip
_OWN_FOLDERS = ("jobs", "artifacts", "cache", "deployments")


def default_home() -> Path:
    return Path(os.environ.get("BT_JUPYTER_HOME") or Path.home() / ".bt_jupyter")


def plain_name(name: str, what: str) -> str:
    """``name`` if it is one plain folder name (``limits.check_path_segment``, and at most
    255 bytes as a file name); UnsafePathError saying why not otherwise."""
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} must be text, got {limits.shown(name)}")
    try:
        limits.check_path_segment(name, what)
    except ValueError as exc:
        raise UnsafePathError(str(exc)) from None
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise UnsafePathError(
            f"{what} {limits.shown(name)} is longer than {_MAX_NAME_BYTES} bytes: use a shorter one"
        )
    return name


def inside(root: Path, name: str, what: str) -> Path:
    """``root/name`` for a plain ``name`` whose resolved path stays under ``root`` (a
    symlink planted there cannot lead out either); UnsafePathError otherwise."""
    path = root / plain_name(name, what)
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{what} {limits.shown(name)} leads outside {root}: refused")
    return path


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _why(exc: OSError, root: Path) -> str:
    """What an OSError says, naming the part of the path that is a file, not a folder."""
    if isinstance(exc, NotADirectoryError):
        for parent in root.parents:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a folder"
    reason = (exc.strerror or str(exc)).lower()
    named = exc.filename and str(exc.filename) != str(root)
    return f"{reason} ({exc.filename})" if named else reason


def private_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, less the group and other bits: what is unpacked in the
    home is this user's only (extraction sets each member's mode, whatever the umask)."""
    safe = tarfile.data_filter(member, dest)
    if safe.mode is None:
        return safe
    return safe.replace(mode=safe.mode & ~_SHARED_BITS, deep=False)


def _create_private(path: Path) -> None:
    """Create an empty 0600 file unless it exists. O_EXCL: an existing file is never opened,
    since closing any descriptor of a database drops this process's SQLite locks on it."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _tighten(path: Path) -> None:
    """Take the group and other bits off one file or folder (never through a symlink)."""
    try:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & _SHARED_BITS:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~_SHARED_BITS)
    except OSError:
        pass  # gone meanwhile, or not ours: the private root still closes it


def _tighten_tree(root: Path) -> None:
    """Every file and folder under ``root`` private (once per home: it may be large)."""
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            _tighten(Path(folder) / name)


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
        return inside(self.root / "jobs", job_id, "job id")

    def node_work(self, job_id: str, node: int) -> Path:
        """A node's working directory: node 0 runs in the unpacked files, the others in
        their own copies, as on separate machines."""
        return self.job_dir(job_id) / ("work" if node == 0 else f"work-node-{node}")

    def node_home(self, job_id: str, node: int) -> Path:
        """A node's ``$HOME``."""
        return self.job_dir(job_id) / f"home-node-{node}"

    def project_cache(self, project_id: str) -> Path:
        return inside(self.root / "cache" / "projects", project_id, "project id")

    def team_cache(self, team: str | None) -> Path:
        return inside(self.root / "cache" / "teams", team or "default", "team name")

    def deployment_dir(self, deployment_id: str) -> Path:
        return inside(self.root / "deployments", deployment_id, "deployment id")

    def ensure(self) -> Home:
        """Create the home (0700) or make an existing one private; HomeError, one line,
        for a folder that cannot be used or cannot be made private."""
        try:
            self._make_private()
        except OSError as exc:
            reason = _why(exc, self.root)
            raise HomeError(
                f"cannot use {self.root} as bt_jupyter's home folder: {reason}; "
                "set BT_JUPYTER_HOME (or pass home=) to a folder of your own"
            ) from None
        return self

    def _make_private(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = self.root.stat()
        if st.st_uid != os.geteuid():
            raise HomeError(
                f"{self.root} belongs to {_owner(st.st_uid)}, not to you "
                f"({_owner(os.geteuid())}): bt_jupyter keeps keys and notebook data there; "
                "set BT_JUPYTER_HOME to a folder of your own"
            )
        was_open = bool(st.st_mode & _SHARED_BITS)
        if was_open:
            os.chmod(self.root, stat.S_IMODE(st.st_mode) & ~_SHARED_BITS)
            if self.root.stat().st_mode & _SHARED_BITS:
                raise HomeError(
                    f"{self.root} cannot be made private (mode "
                    f"{oct(stat.S_IMODE(self.root.stat().st_mode))[2:]}: its file system "
                    "ignores permissions); set BT_JUPYTER_HOME to a folder on a local disk"
                )
        for folder in (self.artifacts, self.root / "jobs"):
            folder.mkdir(exist_ok=True, mode=0o700)
        _create_private(self.db)  # SQLite gives its -wal and -shm files the db's mode
        mark = self.root / _PRIVATE_MARK
        deep = was_open or not mark.exists()  # an existing home: all of ours in it, once
        for name in _OWN_FILES:
            _tighten(self.root / name)
        for name in _OWN_FOLDERS:
            _tighten(self.root / name)
            if deep:
                _tighten_tree(self.root / name)
        if deep:
            _create_private(mark)

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
