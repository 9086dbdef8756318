"""Runs a bundle exactly as a Baseten node would, without the local service.

A clean virtualenv of the image's Python (pip only, no system site-packages) stands for
the image; the bundle's files are the working directory; the environment is only what
the job asks for plus an image's defaults; the start commands run in order, in a shell,
and the first failure ends the run. It is independent of ``bt_jupyter.local``, so it
also checks that the local service's stand-in is no more forgiving than a node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class NodeRun:
    returncode: int
    output: str


def bare_image(folder: Path) -> Path:
    """A bare ``python:X.Y-slim`` stand-in: this Python, pip, nothing else."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True)
    return folder


def run_like_a_node(
    image: Path,
    work: Path,
    start_commands: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> NodeRun:
    """Run ``start_commands`` in ``work`` on ``image`` (a virtualenv), as one node."""
    home = work.parent / "home"
    home.mkdir(exist_ok=True)
    node_env = {"PATH": f"{image / 'bin'}:{IMAGE_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
    # Only the download cache of this machine, so the test does not fetch wheels again;
    # it changes what is downloaded, never what is installed.
    node_env["PIP_CACHE_DIR"] = str(Path.home() / ".cache" / "pip")
    for name in ("PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        if name in os.environ:
            node_env[name] = os.environ[name]
    node_env.update(env or {})
    output: list[str] = []
    for command in start_commands:
        proc = subprocess.run(
            ["sh", "-c", command],
            cwd=work,
            env=node_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        output.append(proc.stdout)
        if proc.returncode != 0:
            return NodeRun(proc.returncode, "".join(output))
    return NodeRun(0, "".join(output))
