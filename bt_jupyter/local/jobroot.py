"""A node's own view of the filesystem, so weights appear at their ``mount_location``
(``/models/base``) as on a Baseten node, without touching this machine's ``/``.

The node's command runs in a private mount namespace (``unshare``: as root, or as the
root of a new user namespace), chrooted into a view folder of the job: every top-level
entry of ``/`` is bind-mounted there as it is, except along the path to a mount
location, where the view has folders of its own holding the host's other entries and,
at the mount location, the mirrored weights (read-only). The namespace, and every mount
in it, ends with the node's processes; the view folder goes with the job's folder.

``python -m bt_jupyter.local.jobroot --root VIEW --cwd DIR --mount SRC=DST ... -- CMD``
is what runs inside the namespace: it builds the view, chroots, and execs ``CMD``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384


class ViewError(Exception):
    """The node's view could not be built (said on the node's stderr, then exit 1)."""


@cache
def unshare_prefix() -> tuple[str, ...] | None:
    """How this machine gives a process a private mount namespace, or None."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    private = ("--mount", "--propagation", "private")
    for prefix in ((exe, *private), (exe, "--user", "--map-root-user", *private)):
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return prefix
    return None


NO_NAMESPACE = (
    "weights are mounted at their mount_location in a private mount namespace, which this "
    "machine does not give the local service: run it as root, or allow unprivileged user "
    "namespaces (sysctl kernel.unprivileged_userns_clone=1)"
)


def wrap(command: list[str], view: Path, cwd: Path, mounts: dict[str, Path]) -> list[str]:
    """``command`` to run in its node's view (see the module doc)."""
    prefix = unshare_prefix()
    if prefix is None:
        raise ViewError(NO_NAMESPACE)
    flags = [f"--mount={src}={dst}" for dst, src in sorted(mounts.items())]
    return [
        *prefix,
        sys.executable,
        "-m",
        "bt_jupyter.local.jobroot",
        f"--root={view}",
        f"--cwd={cwd}",
        *flags,
        "--",
        *command,
    ]


# --------------------------------------------------------------------- inside the namespace


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: Path, flags: int) -> None:
    if _libc().mount(source.encode(), str(target).encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise ViewError(f"mount {source} on {target}: {os.strerror(errno)}")


def _bind(source: str, target: Path, recursive: bool, read_only: bool = False) -> None:
    _mount(source, target, MS_BIND | (MS_REC if recursive else 0))
    if read_only:
        _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _tree(mounts: dict[str, Path]) -> dict[str, Any]:
    """Mount locations as nested folders: ``{"models": {"base": Path(cache)}}``."""
    tree: dict[str, Any] = {}
    for dst, src in mounts.items():
        parts = PurePosixPath(dst).parts[1:]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = src
    return tree


def _fill(host: Path | None, view: Path, tree: dict[str, Any]) -> None:
    """``view`` holds ``host``'s entries as they are, except those in ``tree``."""
    view.mkdir(exist_ok=True)
    if host is not None and host.is_dir():
        for entry in os.scandir(host):
            if entry.name in tree:
                continue
            target = view / entry.name
            if entry.is_symlink():
                if not target.is_symlink():
                    target.symlink_to(os.readlink(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                target.mkdir(exist_ok=True)
                _bind(entry.path, target, recursive=True)
            else:
                target.touch(exist_ok=True)
                _bind(entry.path, target, recursive=False)
    for name, sub in tree.items():
        target = view / name
        if isinstance(sub, dict):
            inner = host / name if host is not None else None
            _fill(inner if inner is not None and inner.is_dir() else None, target, sub)
        else:
            target.mkdir(parents=True, exist_ok=True)
            _bind(str(sub), target, recursive=False, read_only=True)


def enter(view: Path, cwd: Path, mounts: dict[str, Path]) -> None:
    """Build the view, chroot into it and go to ``cwd`` (inside the namespace only)."""
    _fill(Path("/"), view, _tree(mounts))
    os.chroot(view)
    os.chdir(cwd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bt_jupyter.local.jobroot")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--cwd", type=Path, required=True)
    parser.add_argument("--mount", action="append", default=[], metavar="SRC=DST")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    mounts = {dst: Path(src) for src, _, dst in (m.rpartition("=") for m in args.mount)}
    try:
        enter(args.root, args.cwd, mounts)
    except (ViewError, OSError) as exc:
        print(f"weights: the node's view could not be built: {exc}", file=sys.stderr)
        return 1
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
