"""Baseten's own CLI against the local service: ``truss train push``, ``logs``, ``view``
and ``stop`` work unchanged, so an existing truss config can be smoke-tested here first.

truss maps the remote ``http://localhost:8000`` to the REST API at
``http://api.localhost:8000``. Many systems resolve ``*.localhost`` to the loopback
address themselves; where one does not (this machine), an ``/etc/hosts`` line does. The
test cannot edit ``/etc/hosts``, so the truss process it starts gets a ``sitecustomize``
that resolves ``*.localhost`` to 127.0.0.1: only name resolution is stood in for.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bt_jupyter import Client, spec
from bt_jupyter.local.home import Home
from tests.helpers import RESOLVER, running_service, wait_for

TRUSS = Path(sys.executable).parent / "truss"
PORT = 8000  # the only local remote_url truss maps to a REST API


CONFIG = """
from truss.base import truss_config
from truss_train import definitions

project = definitions.TrainingProject(
    name="truss-cli-smoke",
    job=definitions.TrainingJob(
        image=definitions.Image(base_image="python:3.11-slim"),
        compute=definitions.Compute(
            accelerator=truss_config.AcceleratorSpec(accelerator="H100", count=1)
        ),
        runtime=definitions.Runtime(
            start_commands=["python train.py"],
            environment_variables={"GREETING": "hello", "STEPS": "STEPS_VALUE"},
        ),
    ),
)
"""

TRAIN = """
import os, time
for step in range(int(os.environ["STEPS"])):
    print(os.environ["GREETING"], "step", step, flush=True)
    time.sleep(0.1)
"""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


pytestmark = [
    pytest.mark.skipif(not TRUSS.exists(), reason="truss's CLI is not installed"),
    pytest.mark.skipif(
        not _port_free(PORT),
        reason=f"port {PORT} is in use; truss maps only http://localhost:{PORT} to a local API",
    ),
]


@pytest.fixture(scope="module")
def truss_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Home]]:
    """A local service on port 8000 and the environment of a shell with a truss profile
    ``bt-local`` pointing at it."""
    root = tmp_path_factory.mktemp("truss_cli")
    home = Home(root / "home")
    with running_service(home, port=PORT) as info:
        (root / "sitecustomize.py").write_text(RESOLVER)
        trussrc = root / "trussrc"
        trussrc.write_text(
            "[bt-local]\nremote_provider = baseten\n"
            f"api_key = {info.api_key}\nremote_url = http://localhost:{PORT}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASETEN_")}
        env |= {"USER_TRUSSRC_PATH": str(trussrc), "PYTHONPATH": str(root), "COLUMNS": "200"}
        yield env, home


def _truss(env: dict[str, str], folder: Path, *args: str) -> str:
    done = subprocess.run(
        [str(TRUSS), "train", *args, "--remote", "bt-local", "--non-interactive"],
        env=env, cwd=folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"truss train {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _project(folder: Path, steps: int) -> Path:
    folder.mkdir()
    (folder / "config.py").write_text(CONFIG.replace("STEPS_VALUE", str(steps)))
    (folder / "train.py").write_text(textwrap.dedent(TRAIN))
    return folder


def _pushed_job(output: str) -> str:
    found = re.search(r"--job-id (\w+)", output)
    assert found, f"no job id in truss's output:\n{output}"
    return found.group(1)


@pytest.mark.timeout(300)
def test_truss_train_push_logs_and_view_run_a_config_locally(
    truss_env: tuple[dict[str, str], Home], tmp_path: Path
) -> None:
    env, home = truss_env
    folder = _project(tmp_path / "project", steps=5)
    job_id = _pushed_job(_truss(env, folder, "push", "config.py"))

    with Client.local(home.root) as client:
        job = client.job(job_id).wait(timeout=120)
        assert job.status == spec.TrainingJobStatus.COMPLETED
        assert job.project == "truss-cli-smoke"

    logs = _truss(env, folder, "logs", "--job-id", job_id)
    printed = re.findall(r"hello step (\d+)", logs)
    assert printed == [str(i) for i in range(5)], logs
    assert "Unpacked artifact training/" in logs  # the bundle went through the S3 stand-in
    tailed = _truss(env, folder, "logs", "--job-id", job_id, "--tail")
    assert re.findall(r"hello step (\d+)", tailed) == printed, tailed  # oldest first

    view = _truss(env, folder, "view", "--job-id", job_id)
    assert "TRAINING_JOB_COMPLETED" in view
    assert "truss-cli-smoke" in _truss(env, folder, "view")


@pytest.mark.timeout(300)
def test_truss_train_stop_stops_a_running_job(
    truss_env: tuple[dict[str, str], Home], tmp_path: Path
) -> None:
    env, home = truss_env
    folder = _project(tmp_path / "long", steps=3000)
    job_id = _pushed_job(_truss(env, folder, "push", "config.py"))
    with Client.local(home.root) as client:
        job = client.job(job_id)
        wait_for(lambda: job.refresh().status == spec.TrainingJobStatus.RUNNING, 60, "job to run")
        assert "stopped" in _truss(env, folder, "stop", "--job-id", job_id).lower()
        assert job.wait(timeout=60).status == spec.TrainingJobStatus.STOPPED
