"""The local stand-in for a job's image: which Python runs it.

A job runs with the interpreter of the environment that started the service (the calling
notebook's) when its pinned requirements are already satisfied there: nothing to build,
so a warm submit starts in well under a second. Otherwise a virtualenv is built for
them, layered on that environment (``--system-site-packages``, so bt_jupyter and heavy
packages such as torch need no reinstall), cached by the hash of the requirements and
reused by every later job that asks for the same ones. uv installs where it is present,
pip otherwise; torch always goes through pip, which finds the wheel this machine has.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

Log = Callable[[str], None]


class EnvBuildError(Exception):
    """The job's environment could not be prepared (the job is DEPLOY_FAILED)."""


def read_requirements(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def unsatisfied(requirements: list[str]) -> list[str]:
    """The requirements this interpreter's installed distributions do not meet."""
    missing = []
    for line in requirements:
        if line.startswith("-"):
            missing.append(line)  # options (-e, --index-url, ...) always need pip
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise EnvBuildError(f"requirement {line!r} is not valid: {exc}") from None
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing


def python_for(requirements: list[str], envs_dir: Path, log: Log) -> str:
    """The interpreter that runs a job with these requirements, building one if needed."""
    missing = unsatisfied(requirements)
    if not missing:
        log(f"Environment: {sys.executable} already satisfies the job's requirements")
        return sys.executable
    key = hashlib.sha256("\n".join([sys.executable, *sorted(requirements)]).encode()).hexdigest()
    env = envs_dir / key[:16]
    python = env / "bin" / "python"
    envs_dir.mkdir(parents=True, exist_ok=True)
    with (envs_dir / f"{key[:16]}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per environment, others wait and reuse
        if (env / ".ready").exists():
            log(
                f"Environment: reusing cached virtualenv {env.name} for {len(missing)} requirements"
            )
            return str(python)
        shutil.rmtree(env, ignore_errors=True)
        log(f"Environment: building virtualenv {env.name} for: {', '.join(missing)}")
        _run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], log)
        torch = [r for r in missing if _name(r) == "torch"]
        rest = [r for r in missing if _name(r) != "torch"]
        uv = shutil.which("uv")
        if rest:
            if uv:
                _run([uv, "pip", "install", "--python", str(python), *rest], log)
            else:
                _run([str(python), "-m", "pip", "install", "--progress-bar", "off", *rest], log)
        if torch:
            _run([str(python), "-m", "pip", "install", "--progress-bar", "off", *torch], log)
        (env / ".ready").touch()
        log(f"Environment: virtualenv {env.name} ready")
    return str(python)


def _name(line: str) -> str:
    try:
        return Requirement(line).name.lower()
    except InvalidRequirement:
        return ""


def _run(cmd: list[str], log: Log) -> None:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            log(line)
            tail = [*tail[-4:], line]
    if proc.wait() != 0:
        detail = tail[-1] if tail else "no output"
        raise EnvBuildError(f"`{' '.join(cmd[:4])} ...` failed ({proc.returncode}): {detail}")
