"""Hands jobs to runner processes, stops them, and notices runners that died.

One runner waits on standby (imports done) so a new job starts without a Python start-up.
Runners are started in their own session: they outlive the service, and a restarted
service finds them through the pid (and start time) each runner records in the store.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bt_jupyter.local import containment
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import JobRow, Store
from bt_jupyter.spec import TrainingJobStatus

S = TrainingJobStatus
WATCH_SECONDS = 2.0
#: A runner's (and a standby's) niceness against jobs. Linux shares the CPU between
#: sessions first (autogroup), so a thread's own nice counts only inside its runner: the
#: runner's session niceness makes it, reading and storing a job's output, yield to the
#: job's nodes (their own sessions, nice 0) 9 to 1 on a shared CPU, while it still
#: answers a stop at once on a machine the job keeps busy.
RUNNER_NICENESS = 10
#: The next standby starts this long after a job took the last one: its imports (about a
#: CPU-second) would otherwise compete with the new job's start and its first output.
REFILL_DELAY_S = 3.0


def yield_to_jobs(pid: int) -> None:
    """Lowers the runner ``pid``'s session group (Linux autogroup; else nothing)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(RUNNER_NICENESS))


def runner_alive(job: JobRow) -> bool:
    if not job.runner_pid or job.runner_started is None:
        return False
    try:
        proc = psutil.Process(job.runner_pid)
        same = abs(proc.create_time() - job.runner_started) < 1.0
        return same and bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class Dispatcher:
    def __init__(self, home: Home, store: Store) -> None:
        self.home, self.store = home, store
        self._lock = threading.Lock()
        self._standby: subprocess.Popen[bytes] | None = None
        self._dispatched: set[str] = set()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="runner-watch", daemon=True)

    def start(self) -> None:
        self.reconcile()
        with self._lock:
            self._standby = self._spawn()
        self._watcher.start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            standby, self._standby = self._standby, None
        if standby is not None and standby.stdin is not None:
            standby.stdin.close()  # EOF: the standby runner exits without a job
            standby.wait(timeout=10)

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = (self.home.root / "runner-standby.log").open("ab")
        try:
            runner = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bt_jupyter.local.runner",
                    "--home",
                    str(self.home.root),
                    "--standby",
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
                cwd=self.home.root,
            )
        finally:
            log.close()
        yield_to_jobs(runner.pid)  # its imports too
        return runner

    def dispatch(self, job_id: str) -> None:
        """Give the job to the standby runner, then start the next standby."""
        with self._lock:
            if job_id in self._dispatched:
                return
            self._dispatched.add(job_id)
            standby, self._standby = self._standby, None
            if standby is None or standby.poll() is not None:
                standby = self._spawn()
            assert standby.stdin is not None
            standby.stdin.write(f"{job_id}\n".encode())
            standby.stdin.close()
        threading.Thread(target=self._refill, daemon=True).start()
        threading.Thread(target=standby.wait, daemon=True).start()  # reap it when it ends

    def _refill(self) -> None:
        if self._closed.wait(REFILL_DELAY_S):
            return
        with self._lock:
            if self._standby is None and not self._closed.is_set():
                self._standby = self._spawn()

    def stop(self, job: JobRow) -> None:
        """SIGTERM the job's runner (which stops its nodes), or stop a job not yet started."""
        if runner_alive(job):
            assert job.runner_pid is not None
            os.kill(job.runner_pid, signal.SIGTERM)
        else:
            self.store.set_status(job.id, S.STOPPED)

    def reconcile(self) -> None:
        """Settle jobs whose runner is gone; restart jobs that never got one."""
        for job in self.store.jobs(statuses=[s.value for s in S if not s.is_terminal]):
            if runner_alive(job):
                continue  # still running: the runner keeps writing, nothing to reattach
            if job.runner_pid is None:
                if job.status == S.CREATED and time.time() - job.created_at > 5:
                    self.dispatch(job.id)
                continue
            self._kill_nodes(job.id)
            self.store.set_status(
                job.id,
                S.FAILED,
                f"the job's local runner (pid {job.runner_pid}) ended without finishing the job",
            )

    def _kill_nodes(self, job_id: str) -> None:
        # what the runner left: daemons (by its cgroup, or by the job's marker) and the cgroup
        containment.sweep(self.home.job_dir(job_id), job_id)
        try:
            pids = (self.home.job_dir(job_id) / "nodes").read_text().split()
        except FileNotFoundError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(pid), signal.SIGKILL)

    def _watch(self) -> None:
        while not self._closed.wait(WATCH_SECONDS):
            try:
                self.reconcile()
            except Exception as exc:  # keep watching; the next round may succeed
                print(f"runner watch: {exc!r}", file=sys.stderr)
