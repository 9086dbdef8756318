"""A project's training cache, as ``truss train cache summarize`` shows it: every entry
with its size (a folder's is the total of what it holds), sorted by path, size, modified
time, type or permissions; as a table, CSV (the same columns) or JSON (the same keys)."""

from __future__ import annotations

import csv
import io
import json
import posixpath
from dataclasses import asdict, dataclass
from typing import Literal

from bt_jupyter import api

SortKey = Literal["filepath", "size", "modified", "type", "permissions"]
SORTS: tuple[SortKey, ...] = ("filepath", "size", "modified", "type", "permissions")
CSV_HEADER = ["File Path", "Size (bytes)", "Size (human readable)", "Modified", "Type",
              "Permissions"]  # fmt: skip


def human_bytes(size: int) -> str:
    """``1.50 GB``: decimal units, as truss prints them."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size > scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class CacheRow:
    path: str
    size_bytes: int
    modified: str
    type: str
    permissions: str

    @property
    def size(self) -> str:
        return human_bytes(self.size_bytes)


@dataclass(frozen=True)
class CacheView:
    """The rows of one project's cache summary, sorted, with totals."""

    project_id: str
    timestamp: str
    rows: list[CacheRow]

    #: What every entry reports, summed (truss's "Total size").
    total_bytes: int

    def as_json(self) -> str:
        return json.dumps(
            {
                "timestamp": self.timestamp,
                "project_id": self.project_id,
                "total_files": len(self.rows),
                "total_size_bytes": self.total_bytes,
                "total_size_human_readable": human_bytes(self.total_bytes),
                "files": [{**asdict(r), "size_human_readable": r.size} for r in self.rows],
            },
            indent=2,
        )

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for r in self.rows:
            writer.writerow([r.path, r.size_bytes, r.size, r.modified, r.type, r.permissions])
        return out.getvalue()

    def as_text(self) -> str:
        head = (
            f"cache of project {self.project_id} at {self.timestamp}: "
            f"{len(self.rows)} entries, {human_bytes(self.total_bytes)}"
        )
        if not self.rows:
            return f"{head}\n(empty: jobs write it under $BT_PROJECT_CACHE_DIR with --cache)"
        width = min(max(len(r.path) for r in self.rows), 60)
        lines = [head, f"{'path':{width}}  {'size':>10}  {'modified (UTC)':19}  {'type':9}  mode"]
        for r in self.rows:
            when = r.modified.replace("T", " ")[:19]
            lines.append(f"{r.path:{width}}  {r.size:>10}  {when:19}  {r.type:9}  {r.permissions}")
        return "\n".join(lines)


def cache_view(
    summary: api.GetCacheSummaryResponseV1, sort: SortKey = "filepath", descending: bool = False
) -> CacheView:
    """The summary's entries with folder totals, sorted as asked."""
    # as truss sums them: each entry counts in its own folder total and in every folder
    # above it (a folder's own size included, as the API reports it)
    folders = {f.path: 0 for f in summary.file_summaries if f.file_type == "directory"}
    for entry in summary.file_summaries:
        path = entry.path
        while path:
            if path in folders:
                folders[path] += entry.size_bytes
            up = posixpath.dirname(path)
            path = "" if up == path else up
    rows = [
        CacheRow(
            path=f.path,
            size_bytes=folders.get(f.path, f.size_bytes),
            modified=f.modified,
            type=f.file_type or "unknown",
            permissions=f.permissions or "unknown",
        )
        for f in summary.file_summaries
    ]
    key = {
        "filepath": lambda r: r.path,
        "size": lambda r: r.size_bytes,
        "modified": lambda r: r.modified,
        "type": lambda r: r.type,
        "permissions": lambda r: r.permissions,
    }[sort]
    rows.sort(key=key, reverse=descending)
    total = sum(f.size_bytes for f in summary.file_summaries)
    return CacheView(summary.project_id, summary.timestamp, rows, total)
