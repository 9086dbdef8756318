"""Several runs in one view: ``%bt_compare`` and the sweep widget.

Kernel side of an anywidget; its front end is ``labextension/widget/runs.js`` (the same
uPlot charts as the job widget, one series per run). A background thread refreshes the
state while any run is still going and stops when all have ended; an ended run's facts
are read once. Where widgets do not render, the comparison table is the text.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from bt_jupyter.compare import (
    Comparison,
    Run,
    best_of,
    comparison_of,
    run_of,
    run_row,
    view_state,
)
from bt_jupyter.errors import BtJupyterError
from bt_jupyter.jobs import Job
from bt_jupyter.sweeps import Sweep, value_text

_HERE = Path(__file__).parent
REFRESH_SECONDS = 3.0


class RunsWidget(anywidget.AnyWidget):
    _esm = _HERE / "static" / "runs.js"
    _css = _HERE / "static" / "runs.css"

    title = traitlets.Unicode("").tag(sync=True)
    #: "compare" or "sweep" (a sweep's rows have Stop, and the view has "Deploy best").
    mode = traitlets.Unicode("compare").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    #: The metric runs are ranked by, and the metrics every run has.
    metric = traitlets.Unicode("").tag(sync=True)
    metrics: traitlets.List[str] = traitlets.List().tag(sync=True)
    #: One row per run: id, label, status, swept values, final and best of ``metric``.
    runs: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Metric records of every run, ``series`` naming the run (thinned per run).
    series: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: The facts table: name, a value per run, and whether they differ.
    table: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: What the last action did ("deploying ...", an error).
    message = traitlets.Unicode("").tag(sync=True)
    done = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self, jobs: list[Job] | None = None, sweep: Sweep | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.sweep = sweep
        self.jobs = list(jobs or [])
        self.mode = "sweep" if sweep is not None else "compare"
        self._finished: dict[str, Run] = {}
        self._closed = threading.Event()
        self.comparison = self.publish()
        self.on_msg(self._on_message)
        if not self.done:
            threading.Thread(target=self._watch, name="bt-runs", daemon=True).start()

    # ---- state

    def _run(self, job: Job) -> Run:
        if job.id in self._finished:
            return self._finished[job.id]
        if not job.status.is_terminal:
            job.refresh()
        run = run_of(job)
        if job.status.is_terminal:
            self._finished[job.id] = run
        return run

    def _current(self) -> tuple[Comparison, list[dict[str, Any]]]:
        """The comparison, and one row per run (a sweep's waiting runs included)."""
        if self.sweep is None:
            runs = [self._run(job) for job in self.jobs]
            return comparison_of(runs), [run_row(r) for r in runs]
        rows, found = [], []
        for entry in self.sweep.runs:
            swept = {k: value_text(v) for k, v in entry.values.items()}
            if entry.job is None:
                rows.append({"id": "", "label": entry.name, "status": entry.status, "swept": swept})
                continue
            run = self._run(entry.job)
            run.swept = swept
            found.append(run)
            rows.append(run_row(run, entry.status))
        return comparison_of(found), rows

    def publish(self) -> Comparison:
        comparison, rows = self._current()
        state = view_state(comparison, rows, self.metric)
        done = (self.sweep.done if self.sweep else True) and all(
            r.job.status.is_terminal for r in comparison.runs
        )
        with self.hold_sync():
            self.title = self._title(comparison)
            for name, value in state.items():
                setattr(self, name, value)
            self.done = done
        self.comparison = comparison
        return comparison

    def _title(self, comparison: Comparison) -> str:
        if self.sweep is not None:
            ended = sum(1 for r in self.sweep.runs if r.settled)
            project = self.sweep.project.name
            return f"Sweep of {len(self.sweep.runs)} runs in {project}: {ended} ended"
        return f"{len(comparison.runs)} runs compared"

    def _watch(self) -> None:
        while not self._closed.wait(REFRESH_SECONDS):
            try:
                self.publish()
            except BtJupyterError:
                continue  # the service is away for a moment: look again
            if self.done:
                return

    # ---- actions

    def _on_message(self, _: Any, content: dict[str, Any], buffers: list[bytes]) -> None:
        kind = content.get("type")
        if kind == "metric":
            self.metric = str(content.get("name") or "")
            self._background(self.publish)
        elif kind == "stop":
            self._background(self._stop, str(content.get("id") or ""))
        elif kind == "stop_all" and self.sweep is not None:
            self._background(self.sweep.stop)
        elif kind == "deploy_best":
            self._background(self._deploy_best, str(content.get("metric") or self.metric))

    def _background(self, work: Any, *args: Any) -> None:
        def run() -> None:
            try:
                work(*args)
                self.publish()
            except Exception as exc:  # shown in the view, like the job widget's errors
                self.message = f"{type(exc).__name__}: {exc}"

        threading.Thread(target=run, daemon=True).start()

    def _stop(self, job_id: str) -> None:
        for job in self._all_jobs():
            if job.id == job_id:
                job.stop()
                self.message = f"stopping {job.name or job.id}"
                return
        self.message = f"no run {job_id!r} here"

    def _all_jobs(self) -> list[Job]:
        return self.sweep.jobs if self.sweep is not None else self.jobs

    def _deploy_best(self, metric: str) -> None:
        ended = [run for run in self.comparison.runs if run.job.status.is_terminal]
        found = best_of(ended, metric)
        if found is None:
            self.message = f"no ended run has recorded {metric or 'a metric'} yet"
            return
        value, run = found
        self.message = f"deploying the latest checkpoint of {run.label} ({metric} {value:.4g})…"
        try:
            deployment = run.job.deploy("latest").wait()
        except BtJupyterError as exc:
            self.message = f"{run.label} ({metric} {value:.4g}) could not be deployed: {exc}"
            return
        self.message = (
            f"{run.label} ({metric} {value:.4g}): deployment {deployment.name} is "
            f"{deployment.status}" + (f" at {deployment.url}" if deployment.url else "")
        )

    def close(self) -> None:
        self._closed.set()
        super().close()

    # ---- text and static HTML

    def __repr__(self) -> str:
        return self.comparison.text()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        text = (self.sweep.text() + "\n\n" if self.sweep else "") + self.comparison.text()
        return {**data, "text/plain": text, "text/html": static_html(self.comparison)}, metadata


def static_html(comparison: Comparison) -> str:
    """The table of differences as static HTML (a saved notebook, nbconvert)."""
    e = html.escape
    head = "".join(f"<th>{e(r.label)}</th>" for r in comparison.runs)
    rows = "".join(
        f"<tr><td>{e(name)}</td>{''.join(f'<td>{e(v)}</td>' for v in values)}</tr>"
        for name, values in comparison.rows
        if name in comparison.differing or name == "status"
    )
    note = f"<p>{e(comparison.note)}</p>" if comparison.note else ""
    return f"{note}<table class='btj-static'><tr><th></th>{head}</tr>{rows}</table>"
