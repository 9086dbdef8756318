"""Runs first inside the job: installs the bundle's requirements.txt into the image's Python.

``python -m bt_jupyter.install`` is the first start command of every packaged cell, so
the job runs on a bare image exactly as on the notebook: nothing is assumed installed.
It skips what the image already has (an official PyTorch image's torch is never
reinstalled), installs the rest with uv when the image has it and pip otherwise, keeps
the download cache in the project cache when the job has one, and logs what it did and
how long it took. When the install fails it exits non-zero with the installer's last
lines on one line, which becomes the job's error.

Like runtime.py it travels inside the bundle and imports only the standard library.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REQUIREMENTS = "requirements.txt"
PREFIX = "bt_jupyter install:"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^;\s,]+)$")


def read(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = (raw.split(" #", 1)[0].strip() for raw in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def satisfied(line: str) -> bool:
    """Whether a ``name==version`` pin is already installed (local labels aside).

    Anything else (ranges, markers, options) is left to the installer, which skips what
    it finds satisfied itself.
    """
    match = _PIN.match(line)
    if match is None:
        return False
    name, wanted = match.groups()
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return installed.split("+", 1)[0] == wanted.split("+", 1)[0]


def installer(missing: list[str]) -> tuple[list[str], dict[str, str]]:
    """The install command (uv where the image has it, else pip) and its environment."""
    env = dict(os.environ)
    cache = os.environ.get("BT_PROJECT_CACHE_DIR")
    uv = shutil.which("uv")
    if uv:
        if cache:
            env["UV_CACHE_DIR"] = str(Path(cache) / "bt_jupyter" / "uv")
        return [uv, "pip", "install", "--python", sys.executable, *missing], env
    env.update(
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_ROOT_USER_ACTION="ignore",
        PIP_PROGRESS_BAR="off",
        PIP_NO_INPUT="1",
    )
    if cache:
        env["PIP_CACHE_DIR"] = str(Path(cache) / "bt_jupyter" / "pip")
    # no bytecode for the whole of each package (uv's default too): a job imports a
    # fraction of transformers, and compiling all of it took half of pip's time
    return [sys.executable, "-m", "pip", "install", "--no-compile", *missing], env


def main() -> int:
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    wanted = read(Path(REQUIREMENTS))
    missing = [line for line in wanted if not satisfied(line)]
    if not missing:
        print(f"{PREFIX} all {len(wanted)} requirement(s) already installed")
        return 0
    command, env = installer(missing)
    tool = "uv" if "uv" in Path(command[0]).name else "pip"
    print(f"{PREFIX} installing {len(missing)} of {len(wanted)} requirement(s) with {tool}")
    started = time.monotonic()
    tail: list[str] = []
    with subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                print(line)
                tail = [*tail[-3:], line]
    code = proc.returncode
    took = time.monotonic() - started
    if code != 0:
        print(
            f"{PREFIX} {tool} failed (exit {code}) after {took:.1f}s: {' | '.join(tail)}",
            file=sys.stderr,
        )
        return 1
    print(f"{PREFIX} installed {', '.join(missing)} in {took:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
