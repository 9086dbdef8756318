"""Job and deployment output on its way to the store: each line's level, and batched writes.

Its own module because both a job's runner and a deployment's model server write logs
through it, and the model server should not import the runner to do so.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time

from bt_jupyter import api
from bt_jupyter.local.store import LogChunk, Store

FLUSH_SECONDS = 0.05
#: The writer thread's niceness where it cannot be SCHED_IDLE (see ``_yield_cpu``).
WRITER_NICENESS = 19
#: Lines waiting for the store before a reader waits for the writer (about 100 MB of
#: short lines): a job printing faster than SQLite stores is slowed, never lost.
MAX_PENDING = 1_000_000

_ERROR = re.compile(r"^Traceback |^\w*(Error|Exception)\b.*:|\b(ERROR|CRITICAL|FATAL)\b")
_WARNING = re.compile(r"\bWARN(ING)?\b|\bWarning:")
_DEBUG = re.compile(r"\bDEBUG\b")
#: One pass that rules out most lines (plain INFO) before the three precise patterns.
_ANY = re.compile(r"Traceback|Error|Exception|ERROR|CRITICAL|FATAL|WARN|Warning|DEBUG")
#: The same words, for a plain substring search of a whole chunk.
_WORDS = (
    "Traceback",
    "Error",
    "Exception",
    "ERROR",
    "CRITICAL",
    "FATAL",
    "WARN",
    "Warning",
    "DEBUG",
)
LEVEL = {name: index for index, name in enumerate(api.LOG_LEVELS)}
INFO = LEVEL["INFO"]


def level_of(line: str) -> str:
    if not _ANY.search(line):
        return "INFO"
    if _ERROR.search(line):
        return "ERROR"
    if _WARNING.search(line):
        return "WARNING"
    if _DEBUG.search(line):
        return "DEBUG"
    return "INFO"


def levels_of(text: str, lines: list[str]) -> list[int]:
    """Each line's level (as stored). A chunk with none of the words a level needs is all
    INFO: one substring search per word (memchr-fast) rules that out, where a regular
    expression over a megabyte of output would cost the reader more than the rest."""
    if not any(word in text for word in _WORDS):
        return [INFO] * len(lines)
    return [LEVEL[level_of(line)] for line in lines]


def _yield_cpu() -> None:
    """Storing can wait a moment; the job cannot. The writer runs when a CPU has nothing
    else to do (Linux SCHED_IDLE): a CPU running only the writer counts as idle, so the
    runner's output readers are woken there, not beside the job. A job printing flat out
    waited 0.32 s of 1.5 s for a CPU with the writer at nice 19; 0.02 s with it idle and
    the runner's session niced (``dispatch.RUNNER_NICENESS``; bench/log_throughput.py).
    On a busy machine lines are stored a little later, never lost (``MAX_PENDING``)."""
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # not Linux
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, thread, WRITER_NICENESS)


class LogSink:
    """Collects lines from every node and writes them to the store in batches.

    A batch is written every 50 ms (or sooner when large), so a line reaches a follower
    quickly while a million lines still go in as a few hundred transactions. Lines are
    kept as columns, so adding a chunk of them and writing it run no Python per line.
    """

    def __init__(self, store: Store, job_id: str, redact: list[str]) -> None:
        self.store, self.job_id = store, job_id
        self.secrets = [s for s in redact if s]
        self._chunks: list[LogChunk] = []
        self._pending = 0
        self._last_ns = store.last_log_ns(job_id)  # a restarted runner goes on after
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._room = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def redact(self, text: str) -> str:
        """``text`` with every secret value the job was given replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def add(self, message: str, node: int | None = None, level: str | None = None) -> None:
        message = self.redact(message)
        self.add_lines([message], node, [LEVEL[level or level_of(message)]], time.time_ns())

    def add_lines(
        self, messages: list[str], node: int | None, levels: list[int], since_ns: int
    ) -> None:
        """Lines read together (already redacted), written between ``since_ns`` and now:
        their timestamps are spread over that time, increasing, each later than any line
        before, so a time window reads them in the order they were printed."""
        count = len(messages)
        if not count:
            return
        with self._lock:
            now = time.time_ns()
            start = max(since_ns, self._last_ns + 1)
            step = max(1, (now - start) // count)
            first = max(start, now - step * (count - 1))
            self._last_ns = first + step * (count - 1)
            self._chunks.append(LogChunk(first, step, node, levels, messages))
            self._pending += count
            if self._pending >= 20_000:
                self._wake.set()
            while self._pending >= MAX_PENDING and not self._closed:
                self._room.wait(1.0)

    def _take(self) -> list[LogChunk]:
        with self._lock:
            chunks, self._chunks, self._pending = self._chunks, [], 0
            self._room.notify_all()
        return chunks

    def _write(self) -> bool:
        chunks = self._take()
        if chunks:
            self.store.add_logs(self.job_id, chunks)
        return bool(chunks)

    def _run(self) -> None:
        _yield_cpu()
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            closing = self._closed
            self._write()
            if closing:
                return

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()
        self._write()
