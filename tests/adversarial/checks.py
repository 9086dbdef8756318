"""What every adversarial case asserts: one clear line, never a 5xx, nothing changed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bt_jupyter.local.home import Home

# An error message may quote the input that was wrong, but never much of it.
MAX_MESSAGE = 400
# Files that change on their own while a service runs (its log, SQLite's journal).
_VOLATILE = ("service.log", "state.db", "state.db-wal", "state.db-shm")
# Tables only runners append to (a job of an earlier test may still be printing): no
# request writes them, so they cannot show what a request changed.
_RUNNER_TABLES = ("logs", "metrics")


def assert_one_clear_line(message: str, *mentions: str) -> str:
    """One non-empty line, no traceback, short, naming each of ``mentions``."""
    text = message.strip()
    assert text, "empty error message"
    assert "\n" not in text, f"more than one line: {text[:500]!r}"
    assert "Traceback" not in text, f"a traceback: {text[:500]!r}"
    assert len(text) <= MAX_MESSAGE, f"{len(text)} characters: {text[:200]!r}..."
    for word in mentions:
        assert word.lower() in text.lower(), f"{word!r} not named in {text!r}"
    return text


def assert_refused(response: httpx.Response, *mentions: str, status: int | None = None) -> str:
    """A 4xx (never a 5xx) whose JSON ``{"code", "message"}`` message is one clear line."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert response.status_code >= 400, f"accepted ({response.status_code}): {response.text[:300]}"
    if status is not None:
        assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    assert len(response.content) <= 4 * MAX_MESSAGE, f"{len(response.content)}-byte error body"
    body = response.json()
    assert set(body) >= {"code", "message"}, body
    return assert_one_clear_line(str(body["message"]), *mentions)


def state_of(home: Home) -> dict[str, Any]:
    """What a request could change: every row of the service's database and every file
    under the home (but the service's own log and the database files themselves)."""
    rows: dict[str, Any] = {}
    if home.db.exists():
        with sqlite3.connect(f"file:{home.db}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in (t for t in tables if t not in _RUNNER_TABLES):
                rows[table] = sorted(map(repr, db.execute(f'SELECT * FROM "{table}"')))
    files = sorted(
        str(p.relative_to(home.root))
        for p in Path(home.root).rglob("*")
        if p.name not in _VOLATILE and not p.name.startswith(".")
    )
    return {"rows": rows, "files": files}


@contextmanager
def unchanged(home: Home) -> Iterator[None]:
    """Assert the block leaves the service's data as it found it."""
    before = state_of(home)
    yield
    after = state_of(home)
    for table in set(before["rows"]) | set(after["rows"]):
        assert before["rows"].get(table) == after["rows"].get(table), f"table {table} changed"
    assert before["files"] == after["files"], (
        f"files changed: +{sorted(set(after['files']) - set(before['files']))[:5]} "
        f"-{sorted(set(before['files']) - set(after['files']))[:5]}"
    )
