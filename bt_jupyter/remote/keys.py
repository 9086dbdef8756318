"""The SSH key a session signs: truss's (``~/.ssh/baseten/id_ed25519``, or
``$BASETEN_SSH_DIR``), made the way ``truss ssh setup`` makes it when there is none, so
``truss ssh`` and bt_jupyter share one key."""

from __future__ import annotations

import os
from pathlib import Path

from bt_jupyter._asyncssh import asyncssh

KEY_NAMES = ("id_ed25519", "id_rsa")


def key_dir() -> Path:
    return Path(os.environ.get("BASETEN_SSH_DIR") or Path.home() / ".ssh" / "baseten")


def ensure_key() -> asyncssh.SSHKey:
    """The user's key (created 0600 in a 0700 folder the first time)."""
    folder = key_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in KEY_NAMES:
        if (folder / name).exists():
            return asyncssh.read_private_key(str(folder / name))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="baseten-training")
    path = folder / KEY_NAMES[0]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
    path.with_suffix(".pub").write_bytes(key.export_public_key())
    return key


def public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()
