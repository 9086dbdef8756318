"""Job and deployment output on its way to the store: each line's level, and batched writes.

Its own module because both a job's runner and a deployment's model server write logs
through it, and the model server should not import the runner to do so.
"""

from __future__ import annotations

import re
import threading
import time

from bt_jupyter.local.store import Store

FLUSH_SECONDS = 0.05

_ERROR = re.compile(r"^Traceback |^\w*(Error|Exception)\b.*:|\b(ERROR|CRITICAL|FATAL)\b")
_WARNING = re.compile(r"\bWARN(ING)?\b|\bWarning:")
_DEBUG = re.compile(r"\bDEBUG\b")
#: One pass that rules out most lines (plain INFO) before the three precise patterns.
_ANY = re.compile(r"Traceback|Error|Exception|ERROR|CRITICAL|FATAL|WARN|Warning|DEBUG")


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


class LogSink:
    """Collects lines from every node and writes them to the store in batches.

    A batch is written every 50 ms (or sooner when large), so a line reaches a follower
    quickly while a million lines still go in as a few thousand transactions.
    """

    def __init__(self, store: Store, job_id: str, redact: list[str]) -> None:
        self.store, self.job_id = store, job_id
        self.secrets = [s for s in redact if s]
        self._pending: list[tuple[int, int | None, str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
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
        entry = (time.time_ns(), node, level or level_of(message), message)
        with self._lock:
            self._pending.append(entry)
            if len(self._pending) == 5000:
                self._wake.set()

    def _take(self) -> list[tuple[int, int | None, str, str]]:
        with self._lock:
            batch, self._pending = self._pending, []
        return batch

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            closing = self._closed
            batch = self._take()
            if batch:
                self.store.add_logs(self.job_id, batch)
            if closing:
                return

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()
        rest = self._take()
        if rest:
            self.store.add_logs(self.job_id, rest)
