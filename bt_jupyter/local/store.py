"""The local service's durable state: SQLite (WAL) shared by the service and the runners.

The service answers requests from it; each job's runner (a separate, detached process)
writes that job's status, logs, metrics and checkpoints into it. WAL lets readers go on
while one writer commits, and every writer waits (``busy_timeout``) instead of failing.
Status changes go through :meth:`Store.set_status`, which refuses any change the
lifecycle in :class:`bt_jupyter.spec.TrainingJobStatus` does not allow.

Rows are read tolerantly: a value an older service stored, or one edited by hand (a spec
that is no JSON, an absurd node count, a status that is no status), is read as the nearest
sane value, so no stored row can make a listing fail.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bt_jupyter import api, limits
from bt_jupyter.spec import TrainingJobStatus

_ID_ALPHABET = string.ascii_lowercase + string.digits
#: Lines are in order of (timestamp, id): the runner stamps each job's lines increasing,
#: so this is also the order they were written in, and one index serves both reads by
#: time (Baseten's windows) and by cursor (the follow). A cursor is a line's id; the
#: lines after it are those after its (timestamp, id).
_AFTER = "(ts_ns, id) > (coalesce((SELECT ts_ns FROM logs WHERE id = ?), -1), ?)"
_BEFORE = "(ts_ns, id) < (coalesce((SELECT ts_ns FROM logs WHERE id = ?), -1), ?)"
#: A page of lines as JSON columns (a level the reader does not know reads as INFO there),
#: with the lowest and highest id and time: where the page starts and ends, mostly.
_PAGE = (
    "SELECT count(*), min(id), max(id), min(ts_ns), max(ts_ns), json_group_array(ts_ns),"
    " json_group_array(node), json_group_array(level), json_group_array({message})"
    " FROM ({inner})"
)
#: ``before`` this: from the end of the log.
MAX_ID = 2**63 - 1
LEVELS = api.LOG_LEVELS
INFO = LEVELS.index("INFO")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    team_name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (name, team_name)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    error_message TEXT,
    node_count INTEGER NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    runner_pid INTEGER,
    runner_started REAL,
    idempotency_key TEXT UNIQUE,
    body_hash TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at);
CREATE TABLE IF NOT EXISTS status_history (
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_job ON status_history (job_id, at);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    node INTEGER,
    level INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (job_id, ts_ns);
DROP INDEX IF EXISTS logs_by_id;
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL,
    node INTEGER NOT NULL,
    at REAL NOT NULL,
    cpu_usage REAL NOT NULL,
    memory_bytes INTEGER NOT NULL,
    gpus TEXT NOT NULL DEFAULT '{}',
    storage_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics (job_id, at);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    job_id TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    port INTEGER NOT NULL,
    pid INTEGER,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS interactive_sessions (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    node INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    timeout_minutes INTEGER NOT NULL,
    session_provider TEXT NOT NULL,
    auth_provider TEXT NOT NULL,
    auth_code TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    working_directory TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_job ON interactive_sessions (job_id, node);
CREATE TABLE IF NOT EXISTS team_capacity (
    team_id TEXT NOT NULL,
    gpu_type TEXT NOT NULL,
    max_gpus INTEGER NOT NULL,
    last_modified REAL NOT NULL,
    PRIMARY KEY (team_id, gpu_type)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    size_bytes INTEGER NOT NULL,
    checkpoint_type TEXT NOT NULL,
    base_model TEXT,
    lora_adapter_config TEXT,
    PRIMARY KEY (job_id, name)
);
"""


#: Columns added after the first release, added to an older database when it is opened.
_ADDED_COLUMNS = {"jobs": {"body_hash": "TEXT"}}


class IdempotencyConflict(Exception):
    """An Idempotency-Key that created a job is reused with a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def new_id(length: int = 7) -> str:
    """Baseten-style short ids (``gvpql31``)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class ProjectRow:
    id: str
    name: str
    team_name: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class JobRow:
    id: str
    project_id: str
    name: str | None
    spec: dict[str, Any]
    status: TrainingJobStatus
    error_message: str | None
    node_count: int
    priority: int
    created_at: float
    updated_at: float
    runner_pid: int | None
    runner_started: float | None


@dataclass(frozen=True)
class LogRow:
    id: int
    ts_ns: int
    node: int | None
    level: str
    message: str


@dataclass(frozen=True)
class LogChunk:
    """Lines read together from one node (or the runner's own): line ``i`` is stamped
    ``first_ns + i * step_ns``; ``levels`` are indexes of ``LEVELS``."""

    first_ns: int
    step_ns: int
    node: int | None
    levels: list[int]
    messages: list[str]


@dataclass(frozen=True)
class LogPage:
    """Consecutive lines of a log as JSON array texts (one per column), ready to send."""

    count: int
    first_id: int | None
    last_id: int | None
    ts_ns: str
    nodes: str
    levels: str
    messages: str
    #: Where the next page (of as many lines) ends, when asked and it is full.
    next_end: int | None = None


@dataclass(frozen=True)
class SessionRow:
    """One node's interactive session (the Baseten stand-in's; see ``local/sessions``)."""

    id: str
    job_id: str
    node: int
    trigger: str
    timeout_minutes: int
    session_provider: str
    auth_provider: str
    auth_code: str
    created_at: float
    expires_at: float
    working_directory: str


@dataclass(frozen=True)
class MetricRow:
    node: int
    at: float
    cpu_usage: float
    memory_bytes: int
    gpus: dict[str, dict[str, float]]
    storage_bytes: int


@dataclass(frozen=True)
class DeploymentRow:
    id: str
    name: str
    job_id: str
    checkpoint: str
    kind: str  # "hf" (transformers checkpoint) or "model" (a %%bt_model class)
    status: str  # DEPLOYING, ACTIVE, FAILED, STOPPED
    port: int
    pid: int | None
    error_message: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class CheckpointRow:
    job_id: str
    name: str
    created_at: float
    size_bytes: int
    checkpoint_type: str
    base_model: str | None
    lora_adapter_config: dict[str, Any] | None


_DEPLOYING = TrainingJobStatus.DEPLOYING.value
#: Statuses whose message is the job's phase (what it does before its nodes start).
_PHASED = frozenset({TrainingJobStatus.CREATED.value, _DEPLOYING})


class Store:
    """Thread-safe access (one connection per thread) to the state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        db = self._db()
        db.executescript(_SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=60000")
            # read through a memory map: a page of a long log costs no read() per block
            db.execute("PRAGMA mmap_size=268435456")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (no upgrade deadlocks)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ------------------------------------------------------------------ projects

    def upsert_project(self, name: str, team_name: str | None = None) -> ProjectRow:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM projects WHERE name = ? AND team_name = ?", (name, team_name or "")
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO projects VALUES (?, ?, ?, ?, ?)",
                    (new_id(), name, team_name or "", now, now),
                )
            else:
                db.execute("UPDATE projects SET updated_at = ? WHERE id = ?", (now, row["id"]))
            row = db.execute(
                "SELECT * FROM projects WHERE name = ? AND team_name = ?", (name, team_name or "")
            ).fetchone()
        return _project(row)

    def project(self, project_id: str) -> ProjectRow | None:
        row = self._db().execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
        return _project(row) if row else None

    def project_by_name(self, name: str) -> ProjectRow | None:
        row = (
            self._db()
            .execute("SELECT * FROM projects WHERE name = ? ORDER BY created_at LIMIT 1", (name,))
            .fetchone()
        )
        return _project(row) if row else None

    def projects(self) -> list[ProjectRow]:
        rows = self._db().execute("SELECT * FROM projects ORDER BY updated_at DESC").fetchall()
        return [_project(r) for r in rows]

    def delete_project(self, project_id: str) -> None:
        with self._tx() as db:
            jobs = [
                r["id"]
                for r in db.execute("SELECT id FROM jobs WHERE project_id = ?", (project_id,))
            ]
            for job_id in jobs:
                _delete_job_rows(db, job_id)
            db.execute("DELETE FROM projects WHERE id = ?", (project_id,))

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        project_id: str,
        spec: dict[str, Any],
        idempotency_key: str | None = None,
        status: TrainingJobStatus = TrainingJobStatus.CREATED,
        error_message: str | None = None,
        body_hash: str | None = None,
    ) -> tuple[JobRow, bool]:
        """Insert a job (CREATED; PENDING or QUEUED with why it waits); with a known
        idempotency key, return that job instead, if ``body_hash`` (of the request that
        creates it) is the one stored with the key: else :class:`IdempotencyConflict`.

        Returns the job and whether it was created by this call.
        """
        now = time.time()
        with self._tx() as db:
            if idempotency_key:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    if body_hash and row["body_hash"] and row["body_hash"] != body_hash:
                        raise IdempotencyConflict(row["id"])
                    return _job(row), False
            job_id = new_id()
            db.execute(
                "INSERT INTO jobs (id, project_id, name, spec, status, node_count, priority,"
                " created_at, updated_at, idempotency_key, error_message, body_hash)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    project_id,
                    spec.get("name"),
                    json.dumps(spec),
                    status.value,
                    spec.get("compute", {}).get("node_count", 1),
                    spec.get("priority") or 0,
                    now,
                    now,
                    idempotency_key,
                    error_message,
                    body_hash if idempotency_key else None,
                ),
            )
            db.execute("INSERT INTO status_history VALUES (?, ?, ?)", (job_id, status.value, now))
            db.execute("UPDATE projects SET updated_at = ? WHERE id = ?", (now, project_id))
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), True

    def job(self, job_id: str) -> JobRow | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(
        self,
        project_id: str | None = None,
        job_id: str | None = None,
        statuses: Iterable[str] | None = None,
        order: str = "DESC",
        order_field: str = "created_at",
        listing: bool = False,
    ) -> list[JobRow]:
        """Jobs by project, id and status. ``listing``: each spec holds only what a job
        list shows (``compute`` and ``runtime.checkpointing_config``), cut out by SQLite;
        parsing every whole spec in Python was most of a 1,000-job list's time. A spec
        that is no valid JSON text is read whole."""
        where, args = _job_filter(project_id, job_id, statuses)
        columns = _LISTING_COLUMNS if listing else "*"
        sql = f"SELECT {columns} FROM jobs{where}{_job_order(order, order_field)}"
        db = self._db()
        rows = db.execute(sql, args).fetchall()
        return [_job(r, _listed_spec(db, r)) if listing else _job(r) for r in rows]

    def job_page(
        self,
        project_id: str | None,
        statuses: list[str] | None,
        limit: int | None,
        after: tuple[str, float] | None = None,
    ) -> tuple[list[JobRow], dict[str, int]]:
        """The newest ``limit`` jobs (None: all) older than ``after`` (a job's id, and its
        creation time for when it was deleted meanwhile), as a ``listing`` of :meth:`jobs`
        reads them, and how many jobs match in each status: one indexed read, however many."""
        where, args = _job_filter(project_id, None, statuses)
        db = self._db()
        counts = dict(db.execute(f"SELECT status, count(*) FROM jobs{where} GROUP BY status", args))
        page_args: list[Any] = list(args)
        if after is not None:
            anchor = db.execute(
                "SELECT created_at, rowid FROM jobs WHERE id = ?", (after[0],)
            ).fetchone()
            where += " AND " if where else " WHERE "
            if anchor is None:  # deleted: the jobs created before it
                where += "created_at < ?"
                page_args.append(after[1])
            else:  # new jobs do not move a page
                where += "(created_at, rowid) < (?, ?)"
                page_args += [anchor[0], anchor[1]]
        sql = f"SELECT {_LISTING_COLUMNS} FROM jobs{where}{_job_order('DESC', 'created_at')}"
        rows = db.execute(f"{sql} LIMIT ?", [*page_args, -1 if limit is None else limit])
        return [_job(r, _listed_spec(db, r)) for r in rows.fetchall()], counts

    def latest_job(self, project_id: str) -> JobRow | None:
        """The project's newest job (the first of :meth:`jobs`), by its index alone."""
        row = (
            self._db()
            .execute(
                "SELECT * FROM jobs WHERE project_id = ? ORDER BY created_at DESC, rowid DESC"
                " LIMIT 1",
                (project_id,),
            )
            .fetchone()
        )
        return _job(row) if row else None

    def set_status(
        self,
        job_id: str,
        status: TrainingJobStatus,
        error_message: str | None = None,
    ) -> bool:
        """Move a job to ``status`` if the lifecycle allows it; False (and no change) if not.
        Leaving the queue drops the queue advice the job had as its message."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or not _status(row["status"]).can_become(status):
                return False
            # leaving the queue, or CREATED's or DEPLOYING's phase: the advice or phase goes
            waited = _status(row["status"]).is_waiting or row["status"] in _PHASED
            db.execute(
                "UPDATE jobs SET status = ?, error_message = COALESCE(?, error_message),"
                " updated_at = ? WHERE id = ?",
                (status.value, error_message, now, job_id),
            )
            if waited and error_message is None:
                db.execute("UPDATE jobs SET error_message = NULL WHERE id = ?", (job_id,))
            db.execute("INSERT INTO status_history VALUES (?, ?, ?)", (job_id, status.value, now))
        return True

    def history(self, job_id: str) -> list[tuple[TrainingJobStatus, float]]:
        rows = self._db().execute(
            "SELECT status, at FROM status_history WHERE job_id = ? ORDER BY at, rowid", (job_id,)
        )
        return [(_status(r["status"]), _time(r["at"])) for r in rows]

    def set_runner(self, job_id: str, pid: int, started: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET runner_pid = ?, runner_started = ? WHERE id = ?",
                (pid, started, job_id),
            )

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Change a PENDING job's priority (Baseten changes no other job's); False if the
        job is not PENDING (then nothing changed)."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ? AND status = ?",
                (priority, time.time(), job_id, TrainingJobStatus.PENDING.value),
            )
            return changed.rowcount == 1

    def set_phase(self, job_id: str, message: str | None) -> None:
        """What a CREATED or DEPLOYING job is doing before its nodes start (mirroring
        weights, building its environment)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET error_message = ? WHERE id = ? AND status IN (?, ?)",
                (message, job_id, TrainingJobStatus.CREATED.value, _DEPLOYING),
            )

    def set_waiting_message(self, job_id: str, message: str) -> None:
        """A PENDING job's reason and queue position, as the queue moves."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET error_message = ? WHERE id = ? AND status = ?",
                (message, job_id, TrainingJobStatus.PENDING.value),
            )

    def sessions(self, job_id: str) -> list[SessionRow]:
        rows = self._db().execute(
            "SELECT * FROM interactive_sessions WHERE job_id = ? ORDER BY node", (job_id,)
        )
        return [SessionRow(**dict(r)) for r in rows]

    def add_sessions(self, sessions: Iterable[SessionRow]) -> None:
        """Open sessions, unless the job has some already (two callers may race)."""
        with self._tx() as db:
            for s in sessions:
                found = db.execute(
                    "SELECT 1 FROM interactive_sessions WHERE job_id = ? AND node = ?",
                    (s.job_id, s.node),
                ).fetchone()
                if found is None:
                    db.execute(
                        "INSERT INTO interactive_sessions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (s.id, s.job_id, s.node, s.trigger, s.timeout_minutes,
                         s.session_provider, s.auth_provider, s.auth_code, s.created_at,
                         s.expires_at, s.working_directory),
                    )  # fmt: skip

    def update_session(
        self, session_id: str, trigger: str, timeout_minutes: int, expires_at: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE interactive_sessions SET trigger = ?, timeout_minutes = ?,"
                " expires_at = ? WHERE id = ?",
                (trigger, timeout_minutes, expires_at, session_id),
            )

    def team_capacities(self) -> dict[tuple[str, str], tuple[int, float]]:
        """``{(team, gpu_type): (max_gpus, last_modified)}``."""
        rows = self._db().execute("SELECT * FROM team_capacity")
        return {
            (r["team_id"], r["gpu_type"]): (int(r["max_gpus"]), _time(r["last_modified"]))
            for r in rows
        }

    def set_team_capacity(self, team_id: str, gpu_type: str, max_gpus: int) -> float:
        """Create or update a team's cap on a GPU type; returns when it was set."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO team_capacity VALUES (?, ?, ?, ?) ON CONFLICT (team_id, gpu_type)"
                " DO UPDATE SET max_gpus = excluded.max_gpus,"
                " last_modified = excluded.last_modified",
                (team_id, gpu_type, max_gpus, now),
            )
        return now

    def delete_job(self, job_id: str) -> None:
        with self._tx() as db:
            _delete_job_rows(db, job_id)

    # ------------------------------------------------------------------ logs

    def add_logs(self, job_id: str, chunks: Iterable[LogChunk]) -> None:
        """Append chunks of lines in one transaction. Each chunk's messages go to SQLite as
        one JSON text it takes apart itself, its times and node computed there: binding
        five values a line from Python (or making a tuple a line) costs more than the
        insert, and holds the GIL the job's output readers need."""
        with self._tx() as db:
            for chunk in chunks:
                db.execute(
                    "INSERT INTO logs (job_id, ts_ns, node, level, message)"
                    " SELECT ?, ? + key * ?, ?, ?, value FROM json_each(?)",
                    (
                        job_id,
                        chunk.first_ns,
                        chunk.step_ns,
                        chunk.node,
                        INFO,
                        orjson.dumps(chunk.messages).decode(),
                    ),
                )
                if chunk.levels.count(INFO) < len(chunk.levels):  # rare: not all INFO
                    last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
                    first = last - len(chunk.messages) + 1  # one statement's rows follow on
                    db.executemany(
                        "UPDATE logs SET level = ? WHERE id = ?",
                        [(lvl, first + i) for i, lvl in enumerate(chunk.levels) if lvl != INFO],
                    )

    def logs(
        self,
        job_id: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        descending: bool = False,
        limit: int = 500,
        min_level: str | None = None,
        late_every: int = 0,
        late_before_ns: int = 0,
    ) -> list[LogRow]:
        """A window of lines by timestamp. ``late_every``: every that-many-th line is left
        out until ``late_before_ns`` passes its timestamp (lines that reach a log store
        late, behind newer ones, as on Baseten)."""
        where: list[str] = ["job_id = ?"]
        args: list[str | int] = [job_id]
        if late_every:
            where.append("(id % ? != 0 OR ts_ns <= ?)")
            args += [late_every, late_before_ns]
        if start_ns is not None:
            where.append("ts_ns >= ?")
            args.append(start_ns)
        if end_ns is not None:
            where.append("ts_ns <= ?")
            args.append(end_ns)
        if min_level:
            where.append("level >= ?")
            args.append(LEVELS.index(min_level))
        order = "DESC" if descending else "ASC"
        sql = (
            f"SELECT * FROM logs WHERE {' AND '.join(where)} ORDER BY ts_ns {order}, id {order}"
            " LIMIT ?"
        )
        return [_log(r) for r in self._db().execute(sql, [*args, limit])]

    def logs_after(self, job_id: str, after_id: int, limit: int = 1000) -> list[LogRow]:
        """Lines after cursor ``after_id``, in log order (for follow)."""
        rows = self._db().execute(
            f"SELECT * FROM logs WHERE job_id = ? AND {_AFTER} ORDER BY ts_ns, id LIMIT ?",
            (job_id, after_id, after_id, limit),
        )
        return [_log(r) for r in rows]

    def logs_tail_after(
        self, job_id: str, after_id: int, tail: int, keep_containing: str = ""
    ) -> tuple[list[LogRow], int]:
        """For a follower that shows only recent lines: after ``after_id``, the newest
        ``tail`` lines plus older lines holding ``keep_containing`` (metrics, even after a
        progress bar on the same line), and how many lines were skipped."""
        db = self._db()
        total = db.execute(
            f"SELECT COUNT(*) FROM logs WHERE job_id = ? AND {_AFTER}",
            (job_id, after_id, after_id),
        ).fetchone()[0]
        if total <= tail:
            return self.logs_after(job_id, after_id, tail), 0
        newest = db.execute(
            f"SELECT * FROM logs WHERE job_id = ? AND {_AFTER}"
            " ORDER BY ts_ns DESC, id DESC LIMIT ?",
            (job_id, after_id, after_id, tail),
        ).fetchall()
        first_kept = newest[-1]
        kept = []
        if keep_containing:
            pattern = keep_containing.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            kept = db.execute(
                f"SELECT * FROM logs WHERE job_id = ? AND {_AFTER} AND (ts_ns, id) < (?, ?)"
                " AND message LIKE ? ESCAPE '\\' ORDER BY ts_ns, id",
                (
                    job_id,
                    after_id,
                    after_id,
                    first_kept["ts_ns"],
                    first_kept["id"],
                    f"%{pattern}%",
                ),
            ).fetchall()
        rows = [_log(r) for r in [*kept, *reversed(newest)]]
        return rows, total - len(rows)

    def log_page(
        self,
        job_id: str,
        after_id: int = 0,
        before_id: int | None = None,
        limit: int = 50_000,
        node: int | None = None,
        ahead: bool = False,
    ) -> LogPage:
        """Up to ``limit`` lines after ``after_id`` (or the newest ones before
        ``before_id``), in log order, as JSON arrays SQLite writes itself: the bulk read
        path, where building a Python row per line would cost more than SQLite does.
        ``ahead``: also where the next full page would end, so a reader can ask for the
        page after it at once (two pages read at the same time)."""
        where: list[str] = ["job_id = ?"]
        args: list[str | int] = [job_id]
        if before_id is None:
            where.append(_AFTER)
            args += [after_id, after_id]
        elif before_id < MAX_ID:
            where.append(_BEFORE)
            args += [before_id, before_id]
        if node is not None:
            where.append("node = ?")
            args.append(node)
        newest_first = before_id is not None
        order = "DESC" if newest_first else "ASC"
        at = f"FROM logs WHERE {' AND '.join(where)} ORDER BY ts_ns {order}, id {order}"
        inner = f"SELECT id, ts_ns, node, level, message {at} LIMIT ?"
        if newest_first:  # the newest before the cursor, handed out oldest first
            inner = f"SELECT * FROM ({inner}) ORDER BY ts_ns, id"
        db = self._db()
        try:
            row = db.execute(_PAGE.format(inner=inner, message="message"), [*args, limit])
            found = row.fetchone()
        except sqlite3.OperationalError as error:  # a hand-edited BLOB: read it as ""
            if "BLOB" not in str(error):
                raise
            message = "iif(typeof(message) = 'text', message, '')"
            found = db.execute(_PAGE.format(inner=inner, message=message), [*args, limit])
            found = found.fetchone()
        count = int(found[0])
        first = last = None
        walk = f"SELECT id {at} LIMIT 1 OFFSET ?"  # the index, to the n-th line
        if count:
            # The lowest id is the first line when it also has the lowest time (always, for
            # lines this service wrote: it stamps a job's lines increasing); else the
            # index is walked to the line.
            first_at, last_at = (count - 1, 0) if newest_first else (0, count - 1)
            first = _page_end(db, found[1], found[3])
            last = _page_end(db, found[2], found[4])
            if first is None:
                first = db.execute(walk, [*args, first_at]).fetchone()[0]
            if last is None:
                last = db.execute(walk, [*args, last_at]).fetchone()[0]
        next_end = None
        if ahead and count == limit and not newest_first:
            row = db.execute(walk, [job_id, last, last, *args[3:], limit - 1]).fetchone()
            next_end = row[0] if row else None
        return LogPage(count, first, last, found[5], found[6], found[7], found[8], next_end)

    def last_log_ns(self, job_id: str) -> int:
        """The newest line's timestamp (0: none): a new writer continues after it."""
        row = (
            self._db().execute("SELECT max(ts_ns) FROM logs WHERE job_id = ?", (job_id,)).fetchone()
        )
        return row[0] if isinstance(row[0], int) else 0

    def owns_log_line(self, job_id: str, line_id: int) -> bool:
        """Whether ``line_id`` is a line of this job's log (a cursor it handed out)."""
        found = (
            self._db()
            .execute("SELECT 1 FROM logs WHERE id = ? AND job_id = ?", (line_id, job_id))
            .fetchone()
        )
        return found is not None

    def log_count(self, job_id: str) -> int:
        row = self._db().execute("SELECT COUNT(*) FROM logs WHERE job_id = ?", (job_id,)).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ metrics

    def add_metrics(self, job_id: str, samples: Iterable[MetricRow]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        job_id,
                        s.node,
                        s.at,
                        s.cpu_usage,
                        s.memory_bytes,
                        json.dumps(s.gpus),
                        s.storage_bytes,
                    )
                    for s in samples
                ),
            )

    def metrics(
        self, job_id: str, start: float | None = None, end: float | None = None
    ) -> list[MetricRow]:
        rows = self._db().execute(
            "SELECT * FROM metrics WHERE job_id = ? AND at >= ? AND at <= ? ORDER BY at",
            (job_id, start if start is not None else 0.0, end if end is not None else 1e12),
        )
        return [
            MetricRow(
                node=r["node"],
                at=r["at"],
                cpu_usage=r["cpu_usage"],
                memory_bytes=r["memory_bytes"],
                gpus=_json_object(r["gpus"]) or {},
                storage_bytes=r["storage_bytes"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoints(self, job_id: str, found: Iterable[CheckpointRow]) -> None:
        """Record what is on disk now (insert new, update sizes of growing ones)."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (job_id, name) DO UPDATE SET size_bytes = excluded.size_bytes,"
                " checkpoint_type = excluded.checkpoint_type, base_model = excluded.base_model,"
                " lora_adapter_config = excluded.lora_adapter_config",
                (
                    (
                        job_id,
                        c.name,
                        c.created_at,
                        c.size_bytes,
                        c.checkpoint_type,
                        c.base_model,
                        json.dumps(c.lora_adapter_config) if c.lora_adapter_config else None,
                    )
                    for c in found
                ),
            )

    # ------------------------------------------------------------------ deployments

    def create_deployment(
        self, name: str, job_id: str, checkpoint: str, kind: str, port: int
    ) -> DeploymentRow:
        now, deployment_id = time.time(), new_id()
        with self._tx() as db:
            db.execute(
                "INSERT INTO deployments (id, name, job_id, checkpoint, kind, status, port,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'DEPLOYING', ?, ?, ?)",
                (deployment_id, name, job_id, checkpoint, kind, port, now, now),
            )
        found = self.deployment(deployment_id)
        assert found is not None
        return found

    def deployment(self, deployment_id: str) -> DeploymentRow | None:
        row = (
            self._db()
            .execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
            .fetchone()
        )
        return _deployment(row) if row else None

    def deployments(self) -> list[DeploymentRow]:
        rows = self._db().execute("SELECT * FROM deployments ORDER BY created_at DESC")
        return [_deployment(r) for r in rows]

    def update_deployment(self, deployment_id: str, **fields: Any) -> None:
        """Set status, pid or error_message; a final status (FAILED, STOPPED) stays final."""
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE deployments SET {assignments}, updated_at = ? WHERE id = ?"
                " AND status NOT IN ('FAILED', 'STOPPED')",
                (*fields.values(), time.time(), deployment_id),
            )

    def checkpoints(self, job_id: str) -> list[CheckpointRow]:
        rows = self._db().execute(
            "SELECT * FROM checkpoints WHERE job_id = ? ORDER BY created_at, name", (job_id,)
        )
        return [
            CheckpointRow(
                job_id=r["job_id"],
                name=r["name"],
                created_at=r["created_at"],
                size_bytes=r["size_bytes"],
                checkpoint_type=r["checkpoint_type"],
                base_model=r["base_model"],
                lora_adapter_config=_json_object(r["lora_adapter_config"]),
            )
            for r in rows
        ]


def _deployment(row: sqlite3.Row) -> DeploymentRow:
    return DeploymentRow(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (sqlite3.Row)


def _job_filter(
    project_id: str | None, job_id: str | None, statuses: Iterable[str] | None
) -> tuple[str, list[str]]:
    """The WHERE clause (with its leading space, or empty) and arguments of a job query."""
    where: list[str] = []
    args: list[str] = []
    if project_id:
        where.append("project_id = ?")
        args.append(project_id)
    if job_id:
        where.append("id = ?")
        args.append(job_id)
    wanted = list(statuses or [])
    if wanted:
        where.append(f"status IN ({','.join('?' * len(wanted))})")
        args.extend(wanted)
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


def _job_order(order: str, order_field: str) -> str:
    """ORDER BY a known field (else ``created_at``), ties in insertion order."""
    field = order_field if order_field in ("created_at", "updated_at", "priority") else "created_at"
    direction = "ASC" if order.upper() == "ASC" else "DESC"
    return f" ORDER BY {field} {direction}, rowid {direction}"


#: The parts of a spec a job list shows, cut out by SQLite as one JSON array (NULL where
#: the spec is no JSON text: a BLOB is no argument for its JSON functions, and NaN, which
#: Python's json reads, is no JSON for them).
_LISTED_PARTS = (
    "(CASE WHEN typeof(spec) = 'text' AND json_valid(spec)"
    " THEN json_extract(spec, '$.compute', '$.runtime.checkpointing_config') END)"
)
_LISTING_COLUMNS = (
    "id, project_id, name, status, error_message, node_count, priority, created_at,"
    f" updated_at, runner_pid, runner_started, {_LISTED_PARTS} AS parts"
)


def _listed_spec(db: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    """The listed parts of the row's spec; the whole spec, read as :func:`_spec` reads it,
    where SQLite could not read it (rare: a row written by hand)."""
    parts = orjson.loads(row["parts"]) if row["parts"] is not None else None
    if not isinstance(parts, list) or len(parts) != 2:
        whole = db.execute("SELECT spec FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return _spec(whole["spec"] if whole else None)
    compute, checkpointing = parts
    spec: dict[str, Any] = {}
    if isinstance(compute, dict):
        spec["compute"] = compute
    if isinstance(checkpointing, dict):
        spec["runtime"] = {"checkpointing_config": checkpointing}
    return spec


def _page_end(db: sqlite3.Connection, line_id: int, ts_ns: int) -> int | None:
    """``line_id`` when that line has time ``ts_ns`` (then it ends the page, lines being in
    order of time, then id); None when it does not (lines stamped out of order)."""
    row = db.execute("SELECT ts_ns FROM logs WHERE id = ?", (line_id,)).fetchone()
    return line_id if row is not None and row[0] == ts_ns else None


def _delete_job_rows(db: sqlite3.Connection, job_id: str) -> None:
    for table in ("logs", "metrics", "checkpoints", "status_history", "interactive_sessions"):
        db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
    db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


# ---------------------------------------------------------------------- tolerant reads

#: Seconds since the epoch that a datetime can hold (years 1970 to 9999).
_LAST_TIME = 253402300799.0


def _int(value: Any, default: int, low: int, high: int) -> int:
    """A stored integer, or ``default`` where it is none; clamped to ``[low, high]``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return default
    return min(max(value, low), high)


def _time(value: Any) -> float:
    """A stored time (epoch seconds) that a datetime can hold; 0 where there is none."""
    if not isinstance(value, (int, float)) or value != value:  # NaN
        return 0.0
    return min(max(float(value), 0.0), _LAST_TIME)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _json_object(value: Any) -> dict[str, Any] | None:
    """A stored JSON object, or None where the column holds none."""
    if not value:
        return None
    try:
        loaded = json.loads(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _spec(value: Any) -> dict[str, Any]:
    return _json_object(value) or {}


def _status(value: Any) -> TrainingJobStatus:
    """A stored status; an unknown one is kept as a pseudo-member, a blank one is FAILED."""
    try:
        return TrainingJobStatus(value)
    except ValueError:
        return TrainingJobStatus.FAILED


def _project(row: sqlite3.Row) -> ProjectRow:
    return ProjectRow(
        id=str(row["id"]),
        name=_text(row["name"]) or "",
        team_name=_text(row["team_name"]) or None,
        created_at=_time(row["created_at"]),
        updated_at=_time(row["updated_at"]),
    )


def _job(row: sqlite3.Row, spec: dict[str, Any] | None = None) -> JobRow:
    """A stored job, read tolerantly; ``spec``: its (partial) spec, read already."""
    started = row["runner_started"]
    return JobRow(
        id=str(row["id"]),
        project_id=str(row["project_id"]),
        name=_text(row["name"]),
        spec=_spec(row["spec"]) if spec is None else spec,
        status=_status(row["status"]),
        error_message=_text(row["error_message"]),
        node_count=_int(row["node_count"], 1, 1, limits.MAX_NODE_COUNT),
        priority=_int(row["priority"], 0, limits.MIN_PRIORITY, limits.MAX_PRIORITY),
        created_at=_time(row["created_at"]),
        updated_at=_time(row["updated_at"]),
        runner_pid=_int(row["runner_pid"], 0, 0, 2**31) or None,
        runner_started=started if isinstance(started, (int, float)) else None,
    )


def _log(row: sqlite3.Row) -> LogRow:
    level = row["level"]
    return LogRow(
        id=row["id"],
        ts_ns=_int(row["ts_ns"], 0, 0, 2**63 - 1),
        node=row["node"] if isinstance(row["node"], int) else None,
        level=LEVELS[level] if isinstance(level, int) and 0 <= level < len(LEVELS) else "INFO",
        message=_text(row["message"]) or "",
    )
