"""Issue 14, items 9 and 13: every process a job starts ends with the job, and a job's
last words (``raise SystemExit("bad ...")``, a node killed) reach its error message.

Each containment case runs under both mechanisms the runner has: a cgroup v2 per job
(where this machine lets us create one) and the fallback, a subreaper plus the job's
environment marker. A job prints the pid of every process it hides (``pid <n>``), and a
case asserts those are gone and that no process carries the job's marker any more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local import containment
from bt_jupyter.local.home import Home
from bt_jupyter.local.settings import CONTAINMENT_ENV
from bt_jupyter.local.store import Store, new_id
from bt_jupyter.packaging.bundle import PackageOptions, package_cell
from tests.adversarial.checks import assert_one_clear_line
from tests.helpers import (
    DOUBLE_FORK,
    SETSID,
    messages,
    running_service,
    submit,
    wait_for,
    wait_terminal,
)

S = spec.TrainingJobStatus
GRACE_S = 2.0

#: A daemon whose parent is gone: a stray (parent pid 1) unless containment finds it.
NOHUP = "nohup sh -c 'echo pid $$; exec sleep 900' 2>&1 &"
#: A daemon that also drops the job's environment (the marker): found by the mechanism.
NO_MARKER = "env -i setsid -f /bin/sh -c 'echo pid $$; exec sleep 900'"
READY = "echo ready"

HIDERS = {"setsid-f": SETSID, "double-fork": DOUBLE_FORK, "nohup": NOHUP, "env-i": NO_MARKER}


@pytest.fixture(scope="module", params=["cgroup", "subreaper"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Home, ApiClient]]:
    """A service whose runners use one containment mechanism (a short stop grace)."""
    mode = request.param
    if mode == "cgroup" and containment.cgroup_root() is None:
        pytest.skip("this machine gives us no writable cgroup v2 hierarchy")
    home = Home(tmp_path_factory.mktemp(f"bt_contain_{mode}"))
    settings = {"BT_JUPYTER_STOP_GRACE_S": str(GRACE_S), CONTAINMENT_ENV: mode}
    with running_service(home, **settings), ApiClient.local(home.root) as client:
        yield home, client


@pytest.fixture
def job_project(service: tuple[Home, ApiClient]) -> api.TrainingProjectV1:
    return service[1].upsert_project(f"contain-{new_id()}")


def _marked(job_id: str) -> list[psutil.Process]:
    """Live processes whose environment names this job (zombies are gone already)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("BT_TRAINING_JOB_ID") == job_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _hidden_pids(client: ApiClient, job: api.TrainingJobV1, count: int) -> list[int] | None:
    """The pids the job printed (``pid <n>``), once it printed ``count`` of them."""
    pids = [int(m.split()[1]) for m in messages(client, job) if m.startswith("pid ")]
    return pids if len(pids) >= count else None


def _assert_nothing_left(client: ApiClient, job: api.TrainingJobV1, hidden: list[int]) -> None:
    """Right when the job is terminal: none of its processes runs any more."""
    alive = [pid for pid in hidden if _alive(pid)]
    for pid in alive:  # never leave them behind, even when the case fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"processes of job {job.id} outlived it: {alive}"
    marked = _marked(job.id)
    for proc in marked:
        proc.kill()
    assert marked == [], "processes carrying the job's marker outlived it"


def _assert_cgroup_removed(home: Home, job: api.TrainingJobV1) -> None:
    """A job's cgroup (where it had one) is removed once it ended."""
    record = home.job_dir(job.id) / containment.RECORD
    if record.exists():
        folder = Path(record.read_text().strip())
        wait_for(lambda: not folder.exists(), 5, f"{folder} to be removed")


def _start(
    client: ApiClient, project: api.TrainingProjectV1, commands: list[str], hiders: int
) -> tuple[api.TrainingJobV1, list[int]]:
    """Submit, wait until the job says ready and printed ``hiders`` pids."""
    job = submit(client, project, commands)
    wait_for(lambda: "ready" in messages(client, job), 60, "the job to be ready")
    hidden = wait_for(lambda: _hidden_pids(client, job, hiders), 10, "the hidden pids")
    for pid in hidden:
        assert _alive(pid), f"pid {pid} should run while the job runs"
    return job, hidden


@pytest.mark.parametrize("hider", list(HIDERS), ids=list(HIDERS))
def test_stop_ends_a_process_that_left_the_job(
    service: tuple[Home, ApiClient], job_project: api.TrainingProjectV1, hider: str
) -> None:
    home, client = service
    job, hidden = _start(client, job_project, [HIDERS[hider], READY, "sleep 600"], 1)
    client.stop_job(job_project.id, job.id)
    assert wait_terminal(client, job, timeout=30).status == S.STOPPED
    _assert_nothing_left(client, job, hidden)
    _assert_cgroup_removed(home, job)


@pytest.mark.parametrize(
    ("ending", "status"),
    [("true", S.COMPLETED), ("exit 3", S.FAILED)],
    ids=["completed", "failed"],
)
def test_a_job_that_ends_leaves_no_background_process(
    service: tuple[Home, ApiClient],
    job_project: api.TrainingProjectV1,
    ending: str,
    status: spec.TrainingJobStatus,
) -> None:
    _, client = service
    commands = ["sh -c 'echo pid $$; exec sleep 900' &", SETSID, READY, "sleep 1", ending]
    job, hidden = _start(client, job_project, commands, 2)
    started = time.monotonic()
    done = wait_terminal(client, job, timeout=30)
    assert done.status == status, done.error_message
    # the background children hold the job's output pipes: not a reason to wait for them
    assert time.monotonic() - started < 4.0
    _assert_nothing_left(client, job, hidden)


def test_stop_of_a_job_ignoring_sigterm_is_stopped_within_the_grace(
    service: tuple[Home, ApiClient], job_project: api.TrainingProjectV1
) -> None:
    _, client = service
    commands = ["trap '' TERM", SETSID, NOHUP, READY, "while true; do sleep 0.1; done"]
    job, hidden = _start(client, job_project, commands, 2)
    started = time.monotonic()
    client.stop_job(job_project.id, job.id)
    done = wait_terminal(client, job, timeout=30)
    took = time.monotonic() - started
    assert done.status == S.STOPPED
    assert GRACE_S * 0.9 <= took < GRACE_S + 3.0, took
    _assert_nothing_left(client, job, hidden)


def test_a_node_killed_fails_the_job_with_a_clear_message(
    service: tuple[Home, ApiClient], job_project: api.TrainingProjectV1
) -> None:
    home, client = service
    job, hidden = _start(
        client, job_project, [SETSID, READY, "python -c 'import time; time.sleep(600)'"], 1
    )
    node = int((home.job_dir(job.id) / "nodes").read_text().split()[0])
    started = time.monotonic()
    os.kill(node, signal.SIGKILL)
    done = wait_terminal(client, job, timeout=30)
    assert done.status == S.FAILED
    assert time.monotonic() - started < 3.0  # the python child holds the pipe: no wait
    assert done.error_message is not None
    assert_one_clear_line(done.error_message, "node 0", "SIGKILL")
    _assert_nothing_left(client, job, hidden)


def test_stopping_one_job_leaves_other_jobs_and_the_users_processes_alone(
    service: tuple[Home, ApiClient], job_project: api.TrainingProjectV1
) -> None:
    _, client = service
    other, other_hidden = _start(client, job_project, [SETSID, READY, "sleep 600"], 1)
    mine = subprocess.Popen(["sleep", "900"], start_new_session=True)  # the user's own
    try:
        job, hidden = _start(client, job_project, [SETSID, READY, "sleep 600"], 1)
        client.stop_job(job_project.id, job.id)
        assert wait_terminal(client, job, timeout=30).status == S.STOPPED
        _assert_nothing_left(client, job, hidden)
        assert mine.poll() is None, "the user's process was killed"
        assert client.job(job_project.id, other.id).training_job.status == S.RUNNING
        assert all(_alive(pid) for pid in other_hidden), "another job's process was killed"
    finally:
        mine.kill()
        mine.wait()
        client.stop_job(job_project.id, other.id)
        wait_terminal(client, other, timeout=30)
    _assert_nothing_left(client, other, other_hidden)


def test_a_two_node_job_with_a_node_killed_ends_every_node(
    service: tuple[Home, ApiClient], job_project: api.TrainingProjectV1
) -> None:
    home, client = service
    job = submit(
        client, job_project, [SETSID, READY, "sleep 600"], compute=spec.Compute(node_count=2)
    )
    wait_for(lambda: messages(client, job).count("ready") == 2, 60, "both nodes ready")
    hidden = wait_for(lambda: _hidden_pids(client, job, 2), 10, "the hidden pids")
    node_1 = int((home.job_dir(job.id) / "nodes").read_text().split()[1])
    os.kill(node_1, signal.SIGKILL)
    done = wait_terminal(client, job, timeout=30)
    assert done.status == S.FAILED
    assert_one_clear_line(done.error_message or "", "node 1", "SIGKILL")
    _assert_nothing_left(client, job, hidden)


def test_the_service_sweep_ends_what_a_dead_runner_left(
    service: tuple[Home, ApiClient], job_project: api.TrainingProjectV1
) -> None:
    """A runner killed outright cannot clean up; the service's sweep (as it settles the
    job) finds the strays through the job's cgroup or its marker."""
    home, client = service
    job, hidden = _start(client, job_project, [SETSID, READY, "sleep 600"], 1)
    row = Store(home.db).job(job.id)
    assert row is not None
    assert row.runner_pid is not None
    os.kill(row.runner_pid, signal.SIGKILL)
    wait_terminal(client, job, timeout=30)
    ended = containment.sweep(home.job_dir(job.id), job.id)
    assert ended >= 0
    _assert_nothing_left(client, job, hidden)
    _assert_cgroup_removed(home, job)


# --------------------------------------------------------------------------- last words


RAW_EXITS = {
    "raw-string": ("python -c 'raise SystemExit(\"bad config: lr must be > 0\")'", "bad config"),
    "raw-sys-exit": ("python -c 'import sys; sys.exit(\"bad data path\")'", "bad data path"),
    "raw-after-noise": (
        'python -c \'import sys; print("loading", file=sys.stderr); '
        'raise SystemExit("bad tokenizer")\'',
        "bad tokenizer",
    ),
}


@pytest.mark.parametrize("case", list(RAW_EXITS), ids=list(RAW_EXITS))
def test_a_raw_system_exit_message_reaches_the_error(
    client: ApiClient, project: api.TrainingProjectV1, case: str
) -> None:
    command, words = RAW_EXITS[case]
    done = wait_terminal(client, submit(client, project, [command]))
    assert done.status == S.FAILED
    message = assert_one_clear_line(done.error_message or "", "node 0", "code 1", words)
    assert message.endswith(words) or words in message


CELL_EXITS = {
    "cell-string": ('raise SystemExit("bad config: epochs must be positive")\n', "bad config"),
    "cell-sys-exit": ('import sys\nsys.exit("bad dataset: empty")\n', "bad dataset"),
    "cell-after-error-line": (
        'import sys\nprint("ERROR: retrying download", file=sys.stderr)\n'
        'raise SystemExit("bad checkpoint: corrupt")\n',
        "bad checkpoint",
    ),
}


def _submit_cell(
    client: ApiClient, project: api.TrainingProjectV1, shell: InteractiveShell, cell: str
) -> api.TrainingJobV1:
    """The cell packaged as ``%%bt_train`` does, run by ``python -m bt_jupyter.runtime``."""
    bundle = package_cell(cell, shell.user_ns, PackageOptions())
    artifact = client.upload_artifact(bundle.archive)[0]
    job = spec.TrainingJob(
        image=spec.Image(base_image=bundle.base_image),
        runtime=spec.Runtime(start_commands=bundle.start_commands),
    )
    return client.create_job(project.id, job, [artifact])


@pytest.mark.parametrize("case", list(CELL_EXITS), ids=list(CELL_EXITS))
def test_a_packaged_cells_system_exit_message_reaches_the_error(
    client: ApiClient, project: api.TrainingProjectV1, shell: InteractiveShell, case: str
) -> None:
    cell, words = CELL_EXITS[case]
    done = wait_terminal(client, _submit_cell(client, project, shell, cell))
    assert done.status == S.FAILED
    assert_one_clear_line(done.error_message or "", "node 0", words)


def test_a_packaged_cells_system_exit_with_a_number_keeps_its_code(
    client: ApiClient, project: api.TrainingProjectV1, shell: InteractiveShell
) -> None:
    done = wait_terminal(client, _submit_cell(client, project, shell, "raise SystemExit(4)\n"))
    assert done.status == S.FAILED
    assert done.error_message == "node 0 exited with code 4"


def test_a_packaged_cells_quiet_system_exit_completes(
    client: ApiClient, project: api.TrainingProjectV1, shell: InteractiveShell
) -> None:
    job = _submit_cell(client, project, shell, "raise SystemExit\n")
    assert wait_terminal(client, job).status == S.COMPLETED
