"""Runs side by side: what differed between jobs and how their metrics went.

A run's facts come from three places: the job (status, compute, duration, checkpoints),
its bundle's manifest (the ``%%bt_train`` options and the notebook values the cell read,
recorded when it was packaged), and its metric records (final and best of each). The
table lists every fact; the rows that differ are what a person looks at first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from bt_jupyter import spec
from bt_jupyter.errors import BtJupyterError

if TYPE_CHECKING:  # jobs.Client.sweep reaches this module: no import back at run time
    from bt_jupyter.jobs import Job

S = spec.TrainingJobStatus
#: Metric names where lower is better; higher is better for ``_HIGHER``; neither: no best.
_LOWER = re.compile(r"loss|err|perplexity|ppl|wer|cer|mse|mae|rmse|nll|bpb|bpc", re.I)
_HIGHER = re.compile(r"acc|f1|bleu|rouge|auc|precision|recall|score|reward|exact|match", re.I)
#: Series that describe the run, not the model: never picked as "the" metric.
_SCHEDULE = {"learning_rate", "lr", "epoch", "grad_norm"}
MISSING = "-"


class CompareError(BtJupyterError):
    """The jobs cannot be compared (none given, or from different services)."""


def better(metric: str) -> Literal["min", "max"] | None:
    """Which end of a metric is best (None: it has no best, e.g. learning_rate)."""
    if metric in _SCHEDULE:
        return None
    if _LOWER.search(metric):
        return "min"
    if _HIGHER.search(metric):
        return "max"
    return None


@dataclass(frozen=True)
class MetricSummary:
    final: float
    best: float | None
    steps: int


@dataclass
class Run:
    """One job as the comparison sees it."""

    job: Job
    label: str
    facts: dict[str, str]
    metrics: dict[str, MetricSummary]
    records: list[dict[str, Any]] = field(repr=False)
    swept: dict[str, str] = field(default_factory=dict)

    def best(self, metric: str) -> float | None:
        found = self.metrics.get(metric)
        return None if found is None else (found.best if found.best is not None else found.final)


def _seconds(job: Job) -> float | None:
    """Seconds the job ran: from RUNNING to its end (or now)."""
    history = job.history()
    start = next((at for status, at in history if status == S.RUNNING), None)
    if start is None:
        return None
    began = datetime.fromisoformat(start)
    if job.status.is_terminal and history:
        ended = datetime.fromisoformat(history[-1][1])
    else:
        ended = datetime.now(timezone.utc)
    return max(0.0, (ended - began).total_seconds())


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    s = round(seconds)
    return f"{s // 3600}h {s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def number_text(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def summarize_metrics(records: list[dict[str, Any]]) -> dict[str, MetricSummary]:
    series: dict[str, list[float]] = {}
    for record in records:
        for name, value in record.items():
            if name in ("step", "time", "node") or not isinstance(value, (int, float)):
                continue
            series.setdefault(name, []).append(float(value))
    found = {}
    for name, values in series.items():
        way = better(name)
        best = None if way is None else (min(values) if way == "min" else max(values))
        found[name] = MetricSummary(final=values[-1], best=best, steps=len(values))
    return found


def run_of(job: Job) -> Run:
    """A job's facts, options, notebook values and metric summary."""
    manifest = job.bundle_manifest() or {}
    records = job.user_metrics() if job.has_run else []
    metrics = summarize_metrics(records)
    checkpoints = len(job.checkpoints()) if job.has_run else 0
    facts: dict[str, str] = {
        "status": job.status.short,
        "compute": job.compute,
        "duration": duration_text(_seconds(job)),
        "checkpoints": str(checkpoints),
    }
    image = manifest.get("base_image")
    if image:
        facts["image"] = str(image)
    for option, value in sorted((manifest.get("options") or {}).items()):
        facts[option] = str(value)
    values = manifest.get("values") or {}
    for name, value in sorted(values.items()):
        facts[f"value {name}"] = str(value)
    for name, summary in sorted(metrics.items()):
        facts[f"final {name}"] = number_text(summary.final)
        if summary.best is not None:
            facts[f"best {name}"] = number_text(summary.best)
    swept = {str(n): str(values.get(n, MISSING)) for n in manifest.get("swept") or []}
    return Run(job, job.name or job.id, facts, metrics, records, swept)


@dataclass
class Comparison:
    runs: list[Run]
    #: (fact, a value per run), every fact any run has, in a stable order.
    rows: list[tuple[str, list[str]]]
    #: The facts whose values are not all the same.
    differing: set[str]
    #: Metrics every run recorded (charted together).
    common_metrics: list[str]
    note: str = ""

    def text(self, only_differences: bool = True) -> str:
        """The table, one row per fact (by default those that differ)."""
        header = ["", *(r.label for r in self.runs)]
        rows = [
            [name, *values]
            for name, values in self.rows
            if not only_differences or name in self.differing or name == "status"
        ]
        table = [header, *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in table]  # fmt: skip
        if self.note:
            lines.insert(0, self.note)
        return "\n".join(lines)


def compare(jobs: Sequence[Job]) -> Comparison:
    """Compare jobs of one service (CompareError otherwise)."""
    if not jobs:
        raise CompareError("nothing to compare: name jobs (or --project P --last N)")
    backends = {(j.client.backend.name, j.client.url) for j in jobs}
    if len(backends) > 1:
        where = ", ".join(f"{j.id} ({j.client.backend.name})" for j in jobs)
        raise CompareError(
            f"these jobs are on different services ({where}): compare jobs of one backend"
        )
    runs = [run_of(job) for job in jobs]
    return comparison_of(runs)


def comparison_of(runs: list[Run]) -> Comparison:
    names: list[str] = []
    for run in runs:
        names += [n for n in run.facts if n not in names]
    order = {"status": 0, "compute": 1, "image": 2, "duration": 3, "checkpoints": 4}
    names.sort(key=lambda n: order.get(n, 5 if not n.startswith(("final", "best")) else 6))
    rows = [(n, [run.facts.get(n, MISSING) for run in runs]) for n in names]
    differing = {n for n, values in rows if len(set(values)) > 1}
    metric_sets = [set(r.metrics) for r in runs if r.metrics]
    common = sorted(set.intersection(*metric_sets)) if metric_sets else []
    note = ""
    if len(runs) > 1 and not common:
        recorded = "; ".join(f"{r.label}: {', '.join(sorted(r.metrics)) or 'none'}" for r in runs)
        note = f"no metric is common to these jobs ({recorded})"
    return Comparison(runs, rows, differing, common, note)


def pick_metric(runs: Sequence[Run], wanted: str | None = None) -> str | None:
    """The metric to rank runs by: ``wanted``, else the first common one with a best
    (``eval_loss`` before ``loss``), else None."""
    common = set.intersection(*(set(r.metrics) for r in runs)) if runs else set()
    if wanted is not None:
        return wanted if wanted in common else None
    ranked = _ranked(common)
    return ranked[0] if ranked else None


def best_of(runs: Iterable[Run], metric: str) -> tuple[float, Run] | None:
    """The run with the best ``metric`` (lowest or highest as the name says; lowest when
    it says neither) and that value; None when no run recorded it."""
    scored = [(value, run) for run in runs if (value := run.best(metric)) is not None]
    if not scored:
        return None
    pick = max if better(metric) == "max" else min
    return pick(scored, key=lambda pair: pair[0])


def _ranked(metrics: Iterable[str]) -> list[str]:
    """The metrics with a best, ``eval_*`` first: the first ranks runs by default."""
    return sorted((m for m in metrics if better(m)), key=lambda m: (not m.startswith("eval"), m))


#: Points of each run's metric series in a view (evenly thinned, the last one kept).
POINTS_PER_RUN = 300


def thinned(records: list[dict[str, Any]], points: int = POINTS_PER_RUN) -> list[dict[str, Any]]:
    """At most ``points`` records, evenly spaced, the last kept (a new list: views
    compare the state they send by value)."""
    if len(records) <= points:
        return list(records)
    stride = len(records) / points
    return [records[int(i * stride)] for i in range(points - 1)] + [records[-1]]


def run_row(run: Run, status: str | None = None) -> dict[str, Any]:
    """One run as a view's runs table lists it (``final``/``best`` filled by view_state)."""
    status = status or run.job.status.short
    return {"id": run.job.id, "label": run.label, "status": status, "swept": dict(run.swept)}


def view_state(
    comparison: Comparison, rows: list[dict[str, Any]], wanted: str = ""
) -> dict[str, Any]:
    """What a view of the runs shows (the runs widget, the sidebar's Compare panel): the
    ranking metric, each run's final and best of it, every run's series (``series``
    naming the run; the common metrics only, when there are any) and the facts table."""
    common = comparison.common_metrics
    metric = wanted if wanted in common else (_ranked(common) or common or [""])[0]
    by_id = {r.job.id: r for r in comparison.runs}
    for row in rows:
        run = by_id.get(row["id"])
        summary = run.metrics.get(metric) if run else None
        row["final"] = number_text(summary.final) if summary else ""
        row["best"] = number_text(summary.best) if summary and summary.best is not None else ""
    charted = set(comparison.common_metrics)
    series = []
    for run in comparison.runs:
        for record in thinned(run.records):
            values = {
                k: v
                for k, v in record.items()
                if k not in ("step", "time", "node") and (not charted or k in charted)
            }
            series.append(
                {
                    "step": record.get("step"),
                    "time": record.get("time"),
                    "series": run.label,
                    **values,
                }
            )
    return {
        "note": comparison.note,
        "metrics": comparison.common_metrics,
        "metric": metric,
        "runs": rows,
        "series": series,
        "table": [
            {"name": name, "values": values, "differs": name in comparison.differing}
            for name, values in comparison.rows
        ],
    }
