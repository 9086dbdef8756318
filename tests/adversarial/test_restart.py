"""Issue 14, item 6 and the port part of 13: clients find the service again.

A restart of the local service (graceful stop, SIGKILL, a new port) strands no client:
a client whose address came from ``service.json`` reads it again (and, the auto-starting
kind, starts the service) and goes on; a follower resumes from its cursor with no line
lost or repeated. A port that cannot be used is refused with the reason in one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api, cli
from bt_jupyter.client import ApiClient, ConnectionFailed, RetryPolicy
from bt_jupyter.jobs import Client
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from bt_jupyter.magics import BtMagics
from bt_jupyter.widgets.job import JobWidget
from tests.adversarial.checks import assert_one_clear_line, unchanged
from tests.helpers import running_service, submit, wait_for

#: Lines the counting job prints, in bursts of 100 with a pause: about 3 s of output.
LINES = 3000
#: How many lines a follower has seen when the service goes down (well before the end).
RESTART_AFTER = 300

COUNT_SCRIPT = """
import time
for i in range(%d):
    print(f"line {i}", flush=True)
    if i %% 100 == 99:
        time.sleep(0.1)
"""


def _counting_job(client: ApiClient, project: api.TrainingProjectV1, n: int) -> api.TrainingJobV1:
    """A job printing ``line 0`` .. ``line n-1`` over about n/1000 seconds."""
    return submit(client, project, ["python count.py"], files={"count.py": COUNT_SCRIPT % n})


def _expected(n: int) -> list[str]:
    return [f"line {i}" for i in range(n)]


class Follower:
    """Reads an iterator of log lines in a thread, as a widget's follower does."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(lines,), daemon=True)
        self._thread.start()

    def _run(self, lines: Iterator[str]) -> None:
        try:
            for line in lines:
                self.lines.append(line)
        except BaseException as exc:  # re-raised in the test's thread by join()
            self.error = exc

    def join(self, timeout: float) -> list[str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the follower is still following after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.lines


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port(other_than: int) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port != other_than:
            return port


def _take_down(home: Home, how: str) -> daemon.ServiceInfo:
    """End the running service ``how`` ("graceful": daemon.stop, "sigkill"); the old one."""
    old = daemon.status(home)
    assert old is not None, "no service to take down"
    if how == "sigkill":
        os.kill(old.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(old.pid, 0)  # the test process started it: reap it
    else:
        assert daemon.stop(home)
    wait_for(lambda: not _alive(old.pid), 30, "the old service to end")
    return old


def _restart(home: Home, how: str) -> tuple[daemon.ServiceInfo, daemon.ServiceInfo]:
    """Take the service down, then start it again as another would (on a new port when
    ``how`` is "new port"): (old, new)."""
    old = _take_down(home, "graceful" if how == "new port" else how)
    port = _free_port(old.port) if how == "new port" else 0
    new = daemon.ensure_running(home, port)
    assert new.pid != old.pid
    if how == "new port":
        assert new.port == port != old.port
    return old, new


RESTARTS = ["graceful", "sigkill"]


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """One home for the restart cases: each restarts its service and leaves one running
    (a start costs seconds; the cases need not pay for two each)."""
    home = Home(tmp_path_factory.mktemp("bt_restart"))
    with running_service(home):
        yield home


@pytest.fixture
def home(shared_home: Home) -> Home:
    """The shared home, its service running (a case that failed may have left none)."""
    daemon.ensure_running(shared_home)
    return shared_home


# ---------------------------------------------------------------------- followers


@pytest.mark.parametrize("how", RESTARTS)
def test_a_follower_gets_every_line_once_across_a_restart(home: Home, how: str) -> None:
    """The default (auto-starting) client follows on: line count == lines printed."""
    with ApiClient.local(home.root) as client:
        project = client.upsert_project(f"restart-follow-{how}")
        job = _counting_job(client, project, LINES)
        follower = Follower(
            f.log.message for f in client.follow_logs(project.id, job.id) if f.log.replica == "0"
        )
        wait_for(lambda: len(follower.lines) >= RESTART_AFTER, 60, "the follower to read")
        _restart(home, how)
        lines = follower.join(90)
        assert len(lines) == LINES, f"{len(lines)} of {LINES} lines"
        assert lines == _expected(LINES)


def test_a_follower_that_never_starts_the_service_finds_it_on_a_new_port(home: Home) -> None:
    """A client that only reads service.json waits for another to start it, then goes on."""
    n = 1500
    with ApiClient.local(home.root, autostart=False) as client:
        project = client.upsert_project("restart-port")
        job = _counting_job(client, project, n)
        follower = Follower(
            f.log.message for f in client.follow_logs(project.id, job.id) if f.log.replica == "0"
        )
        wait_for(lambda: len(follower.lines) >= RESTART_AFTER, 60, "the follower to read")
        _, new = _restart(home, "new port")
        assert follower.join(90) == _expected(n)
        assert client.base_url == new.url


def test_job_follow_resumes_from_its_cursor_after_a_sigkill(home: Home) -> None:
    n = 1500
    with Client.local(home.root) as client:
        project = client.api.upsert_project("restart-job-follow")
        job = client.job(_counting_job(client.api, project, n).id)
        follower = Follower(f.log.message for f in job.follow() if f.log.replica == "0")
        wait_for(lambda: len(follower.lines) >= RESTART_AFTER, 60, "the follower to read")
        _take_down(home, "sigkill")  # nobody else starts it: the client does
        assert follower.join(90) == _expected(n)


@pytest.mark.parametrize("how", RESTARTS)
def test_a_widget_counts_every_line_once_across_a_restart(home: Home, how: str) -> None:
    """The widget's follower (tail mode: newest lines plus a count) loses and repeats none."""
    with Client.local(home.root) as client:
        project = client.api.upsert_project(f"restart-widget-{how}")
        wire = _counting_job(client.api, project, LINES)
        widget = JobWidget(client.job(wire.id))
        watcher = widget.watcher
        assert watcher is not None
        wait_for(lambda: watcher.count >= RESTART_AFTER, 60, "the widget to read")
        _restart(home, how)
        wait_for(watcher.followed.is_set, 90, "the widget's follower to reach the end")
        watcher.join(30)
        every = list(client.api.all_logs(project.id, wire.id))
        assert [line.message for line in every if line.replica == "0"] == _expected(LINES)
        assert widget.log_count == len(every), f"{widget.log_count} of {len(every)} lines"
        shown = [row["message"] for row in widget.log_tail]
        assert shown == [line.message for line in every[-len(shown) :]]
        assert [row["seq"] for row in widget.log_tail][-1] == len(every)


# ---------------------------------------------------------------------- other calls


CLIENT_RESTARTS = ["graceful stop, the client starts it", "sigkill, the client starts it"]


@pytest.mark.parametrize("how", [*CLIENT_RESTARTS, "restarted by another on a new port"])
def test_client_jobs_after_a_restart_without_a_new_client(home: Home, how: str) -> None:
    first = daemon.ensure_running(home)
    with Client.local(home.root) as client:
        project = client.api.upsert_project(f"restart-jobs-{how}")
        job = submit(client.api, project, ["true"])
        if how.startswith("restarted"):
            _restart(home, "new port")
        else:
            _take_down(home, how.split(",")[0].split()[0])
        assert [j.id for j in client.jobs(project=project.name)] == [job.id]
        now = daemon.status(home)
        assert now is not None
        assert now.pid != first.pid
        assert client.url == now.url


def test_bt_jobs_magic_after_a_restart(
    home: Home,
    shell: InteractiveShell,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BT_JUPYTER_HOME", str(home.root))
    magics = BtMagics(shell=shell)
    project = magics.client().api.upsert_project("restart-magic")
    job = submit(magics.client().api, project, ["true"])
    magics.bt_jobs("--all")
    assert job.id in capsys.readouterr().out
    _take_down(home, "sigkill")
    magics.bt_jobs("--all")
    assert job.id in capsys.readouterr().out
    magics.client().close()


def test_a_client_made_before_the_service_ever_started_finds_it(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with ApiClient.local(home.root, autostart=False) as client:
        assert daemon.status(home) is None  # making it started nothing
        with running_service(home) as info:
            assert client.upsert_project("late").name == "late"
            assert client.base_url == info.url


def test_a_client_that_never_starts_the_service_says_how_to_start_it(tmp_path: Path) -> None:
    home = Home(tmp_path)
    quick = RetryPolicy(attempts=2, base_delay=0.01)
    with ApiClient.local(home.root, autostart=False, retry=quick) as client:
        with pytest.raises(ConnectionFailed) as failed:
            client.projects()
        assert_one_clear_line(str(failed.value), "not running", "bt-jupyter local start")
        assert daemon.status(home) is None


# ---------------------------------------------------------------------- ports


@contextlib.contextmanager
def _port_in_use() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield int(taken.getsockname()[1])


def _cli(
    home: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``bt-jupyter ARGS`` on ``home``: (exit code, stdout, stderr)."""
    monkeypatch.setenv("BT_JUPYTER_HOME", str(home.root))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


BAD_PORTS = {
    "too big": "99999",
    "negative": "-1",
    "one past the last": "65536",
    "not a number": "abc",
    "a fraction": "80.5",
    "empty": "",
}


@pytest.mark.parametrize("value", BAD_PORTS.values(), ids=BAD_PORTS.keys())
def test_cli_start_refuses_a_bad_port_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    home = Home(tmp_path)
    with unchanged(home):
        code, out, err = _cli(home, monkeypatch, capsys, "local", "start", "--port", value)
    assert code != 0
    assert out == ""
    assert_one_clear_line(err, "port", "1..65535", "0")
    assert daemon.status(home) is None


def test_cli_start_on_a_port_in_use_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home(tmp_path)
    with _port_in_use() as port:
        code, out, err = _cli(home, monkeypatch, capsys, "local", "start", "--port", str(port))
    assert code != 0
    assert out == ""
    assert_one_clear_line(err, "address already in use", str(port), "service.log")
    assert daemon.status(home) is None


API_BAD_PORTS = {"too big": 99999, "negative": -1, "one past the last": 65536, "huge": 2**70}


@pytest.mark.parametrize("port", API_BAD_PORTS.values(), ids=API_BAD_PORTS.keys())
def test_ensure_running_refuses_a_bad_port_in_one_line(tmp_path: Path, port: int) -> None:
    home = Home(tmp_path)
    with unchanged(home), pytest.raises(daemon.ServiceError) as refused:
        daemon.ensure_running(home, port)
    assert_one_clear_line(str(refused.value), str(port)[:12], "1..65535")


def test_ensure_running_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    home = Home(tmp_path)
    with _port_in_use() as port, pytest.raises(daemon.ServiceError) as refused:
        daemon.ensure_running(home, port)
    assert_one_clear_line(str(refused.value), "address already in use", str(port), "service.log")
    assert daemon.status(home) is None
