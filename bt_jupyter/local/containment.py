"""Every process a job starts ends with the job, daemons included.

A node's process group is not enough: ``setsid -f``, ``nohup … &`` or a double fork
leave it (and, with their parent gone, would be adopted by pid 1 and outlive the job).
So a job's processes are kept where they can all be found again:

- a **cgroup v2 per job** (``bt-jupyter-<job>/node-<rank>``) where this machine lets
  the runner create one under its own cgroup: nothing started inside can leave it, and
  ``cgroup.kill`` ends all of it at once;
- always, the runner is a **subreaper** (``PR_SET_CHILD_SUBREAPER``): an orphan of a
  node is adopted by the runner instead of pid 1, so it stays a descendant;
- and the job's **environment marker** (``BT_TRAINING_JOB_ID``) finds what escaped both
  (after the runner itself died, say), for the service's :func:`sweep`.

``Settings.containment`` (``BT_JUPYTER_CONTAINMENT``) picks the mechanism.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

MARKER = "BT_TRAINING_JOB_ID"
#: The file in a job's folder naming its cgroup, for a service that outlived the runner.
RECORD = "cgroup"
PR_SET_CHILD_SUBREAPER = 36
#: How long ending a job's processes may take before giving up on the stubborn ones.
END_TIMEOUT_S = 5.0

Log = Callable[[str], None]


def become_subreaper() -> bool:
    """Make orphans of this process's descendants its children, not pid 1's (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _own_cgroup() -> str | None:
    """This process's cgroup v2 path (``0::/path``), or None without a v2 hierarchy."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::")), None)


def _cgroup2_mounts() -> list[tuple[str, Path]]:
    """(root inside the hierarchy, mount point) of each cgroup v2 mount."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if rest.split()[:1] == ["cgroup2"] and len(parts) >= 5:
            found.append((parts[3], Path(parts[4])))
    return found


def cgroup_root() -> Path | None:
    """The folder of this process's own cgroup when we may create cgroups under it."""
    own = _own_cgroup()
    if own is None:
        return None
    for root, mount in _cgroup2_mounts():
        if not (own == root or own.startswith(root.rstrip("/") + "/")):
            continue
        folder = mount / own[len(root) :].lstrip("/")
        if os.access(folder, os.W_OK) and os.access(folder / "cgroup.procs", os.W_OK):
            return folder
    return None


def _make_cgroup(job_id: str) -> Path | None:
    root = cgroup_root()
    if root is None:
        return None
    folder = root / f"bt-jupyter-{job_id}"
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return None
    return folder


class Containment:
    """The processes of one job: where its nodes start and how all of them end.

    ``adopted``: also count this process's descendants as the job's (true in the job's
    runner, which is their subreaper; false in the service, whose children are others').
    """

    def __init__(self, job_id: str, cgroup: Path | None, adopted: bool = True) -> None:
        self.job_id, self.cgroup, self.adopted = job_id, cgroup, adopted

    @classmethod
    def start(cls, job_id: str, job_dir: Path, log: Log, mode: str = "auto") -> Containment:
        """Make the runner a subreaper and, where allowed (``mode`` is not "subreaper"),
        the job's cgroup."""
        if not become_subreaper():
            log("Containment: this system has no subreaper; daemons are found by marker")
        cgroup = _make_cgroup(job_id) if mode != "subreaper" else None
        if cgroup is not None:
            (job_dir / RECORD).write_text(str(cgroup))
        elif mode == "cgroup":
            log("Containment: no writable cgroup v2 here; using a subreaper instead")
        return cls(job_id, cgroup)

    @classmethod
    def recorded(cls, job_dir: Path, job_id: str) -> Containment:
        """The containment a runner recorded, as seen from another process."""
        try:
            cgroup: Path | None = Path((job_dir / RECORD).read_text().strip())
        except OSError:
            cgroup = None
        return cls(job_id, cgroup, adopted=False)

    # ------------------------------------------------------------------ start

    def wrap(self, rank: int, argv: list[str]) -> list[str]:
        """``argv`` run inside the node's cgroup: a shell moves itself there, then execs
        ``argv`` (same pid), so not one instruction of the job runs outside it."""
        if self.cgroup is None:
            return argv
        node = self.cgroup / f"node-{rank}"
        try:
            node.mkdir(exist_ok=True)
        except OSError:
            return argv
        move = '{ echo $$ > "$1"; } 2>/dev/null; shift; exec "$@"'
        return ["/bin/sh", "-c", move, "bt-node", str(node / "cgroup.procs"), *argv]

    # ------------------------------------------------------------------ find

    def members(self, rank: int | None = None, marker: bool = True) -> list[psutil.Process]:
        """Every live process of the job (of node ``rank`` only, when given)."""
        found: dict[int, psutil.Process] = {}
        if self.adopted:
            with contextlib.suppress(psutil.Error):
                found.update((p.pid, p) for p in psutil.Process().children(recursive=True))
        for pid in self._cgroup_pids(rank):
            with contextlib.suppress(psutil.Error):
                found.setdefault(pid, psutil.Process(pid))
        if marker:
            found.update((p.pid, p) for p in self._marked() if p.pid not in found)
        procs = [p for p in found.values() if _live(p)]
        if rank is not None:
            procs = [p for p in procs if self._rank_of(p) in (rank, None)]
        return procs

    def _cgroup_pids(self, rank: int | None) -> list[int]:
        if self.cgroup is None:
            return []
        pids = []
        folders = [self.cgroup / f"node-{rank}"] if rank is not None else self._folders()
        for folder in folders:
            with contextlib.suppress(OSError, ValueError):
                pids += [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        return pids

    def _folders(self) -> list[Path]:
        """The job's cgroup folders, deepest first (the order they can be removed in)."""
        if self.cgroup is None or not self.cgroup.is_dir():
            return []
        below = [Path(d) for d, _, _ in os.walk(self.cgroup)]
        return sorted(below, key=lambda p: len(p.parts), reverse=True)

    def _marked(self) -> list[psutil.Process]:
        """Processes whose environment carries this job's id (ours and our parents' aside)."""
        skip = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        found = []
        for pid in _marked_pids(f"{MARKER}={self.job_id}"):
            if pid not in skip:
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(pid))
        return found

    def _rank_of(self, proc: psutil.Process) -> int | None:
        """The node a process belongs to, by its cgroup, else its environment."""
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            if self.cgroup is not None:
                text = Path(f"/proc/{proc.pid}/cgroup").read_text()
                for line in text.splitlines():
                    if line.startswith("0::") and f"/bt-jupyter-{self.job_id}/node-" in line:
                        return int(line.rsplit("node-", 1)[1])
            rank = proc.environ().get("BT_NODE_RANK")
            return int(rank) if rank is not None else None
        return None

    # ------------------------------------------------------------------ end

    def end(
        self, rank: int | None = None, keep: Iterable[int] = (), timeout: float = END_TIMEOUT_S
    ) -> int:
        """SIGKILL every process of the job (of node ``rank``) until none is left, as a
        container's processes die with it; reap those we adopted but ``keep`` (see
        :meth:`reap`). The number ended."""
        ended: set[int] = set()
        deadline = time.monotonic() + timeout
        while True:
            self._cgroup_kill(rank)
            procs = self.members(rank)
            if not procs:
                break
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
                    ended.add(proc.pid)
            psutil.wait_procs(procs, timeout=0.5)
            if time.monotonic() > deadline:
                break
        self.reap(keep)
        if rank is None:
            self._remove_cgroup()
        return len(ended)

    def terminate(self, procs: Iterable[psutil.Process], groups: set[int]) -> None:
        """One SIGTERM each: to the node groups, and directly to what left them."""
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                if os.getpgid(proc.pid) not in groups:
                    proc.send_signal(signal.SIGTERM)

    def reap(self, keep: Iterable[int] = ()) -> None:
        """Collect adopted orphans that ended (zombies), but the pids in ``keep``
        (the nodes, whose exit codes their ``Popen`` reads)."""
        if not self.adopted:
            return
        kept = set(keep)
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children():
                if child.pid in kept:
                    continue
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    if child.status() == psutil.STATUS_ZOMBIE:
                        os.waitpid(child.pid, os.WNOHANG)

    def _cgroup_kill(self, rank: int | None) -> None:
        if self.cgroup is None:
            return
        target = self.cgroup / f"node-{rank}" if rank is not None else self.cgroup
        with contextlib.suppress(OSError):
            (target / "cgroup.kill").write_text("1")

    def _remove_cgroup(self) -> None:
        """Remove the job's cgroup once empty (a removed one is simply not there)."""
        deadline = time.monotonic() + 2.0
        for folder in self._folders():
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.01)


def _marked_pids(entry: str) -> list[int]:
    """Pids whose environment holds ``entry`` (``NAME=value``): /proc read directly, as
    bytes (psutil's parsing of every environment costs ten times more), else psutil."""
    proc = Path("/proc")
    if not (proc / "self" / "environ").exists():
        name, _, value = entry.partition("=")
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.environ().get(name) == value:
                    found.append(p.pid)
        return found
    needle = entry.encode() + b"\0"
    pids = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            data = (proc / name / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if data.startswith(needle) or b"\0" + needle in data:
            pids.append(int(name))
    return pids


def _live(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    return False


def sweep(job_dir: Path, job_id: str) -> int:
    """End what a job left running when its runner could not (it was killed outright):
    its recorded cgroup and every process carrying its marker. The number ended.

    For the service, as it settles a job whose runner is gone."""
    return Containment.recorded(job_dir, job_id).end()
