"""Sweeps: one cell, one job per combination of notebook values (a grid).

Every combination is packaged before anything is submitted, so a value that cannot
travel, a name the cell never reads or a grid too big is refused with nothing sent.
Jobs are submitted ``max_parallel`` at a time (all at once by default: the service's
capacity queues them) by a thread of this kernel; each is a job of the same project,
named after its values, so any tool that lists jobs shows what each one tried.
"""

from __future__ import annotations

import ast
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bt_jupyter import limits, spec
from bt_jupyter.compare import (
    CompareError,
    Comparison,
    Run,
    best_of,
    comparison_of,
    pick_metric,
    run_of,
)
from bt_jupyter.errors import BtJupyterError
from bt_jupyter.packaging import Bundle, PackageOptions, names_read, package_cell
from bt_jupyter.packaging.bundle import plain_python

if TYPE_CHECKING:
    from bt_jupyter.deployments import Deployment
    from bt_jupyter.jobs import Client, Job

#: More combinations than this is refused unless the user raises the cap (``--sweep-max``).
DEFAULT_MAX_RUNS = 64
#: Seconds between looks at the running jobs when submitting ``max_parallel`` at a time.
POLL_S = 2.0


class SweepError(BtJupyterError):
    """A sweep that cannot start (nothing of it was submitted)."""


# --------------------------------------------------------------------------- the grid


def _values(text: str) -> list[Any]:
    """``1e-4,3e-4`` -> [0.0001, 0.0003]; ``adamw,sgd`` -> ["adamw", "sgd"]; a value that
    is not a Python literal is a string."""
    try:
        parsed = ast.literal_eval(f"({text},)") if text.strip() else ()
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return [_literal(part.strip()) for part in text.split(",") if part.strip()]
    return list(parsed)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_grid(axes: Sequence[str]) -> dict[str, list[Any]]:
    """``["lr=1e-4,3e-4", "lora_r=8,16"]`` -> ``{"lr": [...], "lora_r": [8, 16]}``."""
    grid: dict[str, list[Any]] = {}
    for axis in axes:
        name, sep, text = axis.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise SweepError(f"--sweep {axis!r}: write it as NAME=V1,V2 (e.g. lr=1e-4,3e-4)")
        if name in grid:
            raise SweepError(f"--sweep {name} is given twice; list all its values once")
        values = _values(text)
        if not values:
            raise SweepError(f"--sweep {name}: no values; list them, e.g. {name}=1,2")
        grid[name] = values
    return grid


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def value_text(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def run_name(base: str, values: Mapping[str, Any]) -> str:
    """``sweep lr=0.0001 lora_r=8``: a job name that says what the run tried."""
    name = " ".join([base, *(f"{k}={value_text(v)}" for k, v in values.items())])
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name[: limits.MAX_NAME_CHARS]


def check(grid: Mapping[str, Sequence[Any]], cell: str, max_runs: int) -> list[dict[str, Any]]:
    """The combinations of a grid for ``cell``; SweepError for a name the cell does not
    read, a value list that is empty or a grid bigger than ``max_runs``."""
    if not grid:
        raise SweepError("a sweep needs at least one --sweep NAME=V1,V2")
    read = set(names_read(plain_python(cell)))
    unread = [n for n in grid if n not in read]
    if unread:
        listed = ", ".join(sorted(read)[:8]) or "no notebook names"
        raise SweepError(
            f"--sweep {', '.join(unread)}: the cell does not read "
            f"{'it' if len(unread) == 1 else 'them'} (it reads {listed}); sweep over a "
            "name the cell uses before assigning it"
        )
    empty = [n for n, values in grid.items() if not values]
    if empty:
        raise SweepError(f"--sweep {', '.join(empty)}: no values to try")
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > max_runs:
        raise SweepError(
            f"the sweep has {count:,} combinations, more than {max_runs}: narrow it, or "
            f"allow it with --sweep-max {count} (sweep_max={count})"
        )
    return combinations(grid)


# --------------------------------------------------------------------------- one sweep


@dataclass
class SweepRun:
    values: dict[str, Any]
    name: str
    bundle: Bundle = field(repr=False)
    job: Job | None = None
    error: str = ""
    cancelled: bool = False

    @property
    def status(self) -> str:
        if self.job is not None:
            return self.job.status.short
        if self.error:
            return "NOT SUBMITTED"
        return "CANCELLED" if self.cancelled else "WAITING"

    @property
    def settled(self) -> bool:
        """Nothing more will happen to it."""
        if self.job is not None:
            return self.job.status.is_terminal
        return bool(self.error) or self.cancelled


class Sweep:
    """The jobs of one sweep: submitted ``max_parallel`` at a time, compared, ranked."""

    def __init__(
        self,
        client: Client,
        project: spec.TrainingProject,
        runs: list[SweepRun],
        max_parallel: int | None = None,
        team: str | None = None,
    ) -> None:
        self.client, self.project, self.runs, self.team = client, project, runs, team
        self.max_parallel = max_parallel or len(runs)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._feeder: threading.Thread | None = None

    # ---- submitting

    def _submit(self, run: SweepRun) -> None:
        job_spec = self.project.job.model_copy(update={"name": run.name})
        try:
            run.job = self.client.submit(
                self.project.model_copy(update={"job": job_spec}), run.bundle, team=self.team
            )
        except BtJupyterError as exc:
            run.error = str(exc)

    def _running(self) -> int:
        live = [r for r in self.runs if r.job is not None and not r.job.status.is_terminal]
        for run in live:
            assert run.job is not None
            run.job.refresh()
        return sum(1 for r in live if r.job is not None and not r.job.status.is_terminal)

    def start(self) -> Sweep:
        """Submit the first ``max_parallel`` now (an error the service gives the first job
        stops the sweep: the rest would meet it too); a thread submits the rest."""
        first = self.runs[: self.max_parallel]
        self._submit(first[0])
        if first[0].error:
            for run in self.runs[1:]:
                run.cancelled = True
            raise SweepError(f"the sweep's first job was refused: {first[0].error}")
        for run in first[1:]:
            self._submit(run)
        if len(self.runs) > self.max_parallel:
            self._feeder = threading.Thread(target=self._feed, name="bt-sweep", daemon=True)
            self._feeder.start()
        return self

    def _feed(self) -> None:
        while not self._stopped.is_set():
            waiting = [r for r in self.runs if r.job is None and not r.settled]
            if not waiting:
                return
            try:
                free = self.max_parallel - self._running()
            except BtJupyterError:
                free = 0  # the service is away for a moment: look again
            for run in waiting[: max(0, free)]:
                with self._lock:
                    if not self._stopped.is_set():
                        self._submit(run)
            self._stopped.wait(POLL_S)

    # ---- watching

    @property
    def jobs(self) -> list[Job]:
        return [r.job for r in self.runs if r.job is not None]

    @property
    def done(self) -> bool:
        return all(r.settled for r in self.runs)

    def refresh(self) -> Sweep:
        for job in self.jobs:
            if not job.status.is_terminal:
                job.refresh()
        return self

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> Sweep:
        """Until every run has ended (or was not submitted)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the sweep is not done after {timeout} s")
            time.sleep(poll)
        return self

    def stop(self) -> Sweep:
        """Stop every running job and submit no more."""
        with self._lock:
            self._stopped.set()
            for run in self.runs:
                if run.job is None:
                    run.cancelled = True
        for job in self.jobs:
            if not job.refresh().status.is_terminal:
                job.stop()
        return self

    # ---- comparing

    def compared(self) -> Comparison:
        found = [(r, run_of(r.job)) for r in self.runs if r.job is not None]
        for sweep_run, run in found:
            run.swept = {k: value_text(v) for k, v in sweep_run.values.items()}
        return comparison_of([run for _, run in found])

    def best(self, metric: str | None = None) -> Run:
        """The finished run with the best ``metric`` (by default the first common one
        where lower or higher is better, ``eval_*`` first)."""
        finished = [run_of(r.job) for r in self.runs if r.job is not None and r.job.has_run]
        chosen = pick_metric(finished, metric)
        if chosen is None:
            what = f"metric {metric!r}" if metric else "metric with a best (loss, accuracy, ...)"
            raise CompareError(f"no run of this sweep has recorded a {what} yet")
        found = best_of(finished, chosen)
        assert found is not None  # every finished run has the chosen metric
        return found[1]

    def deploy_best(self, metric: str | None = None, checkpoint: str = "latest") -> Deployment:
        return self.best(metric).job.deploy(checkpoint)

    def text(self) -> str:
        names = list(self.runs[0].values) if self.runs else []
        header = ["job", "status", *names]
        rows = [
            [r.job.id if r.job else "-", r.status, *(value_text(r.values[n]) for n in names)]
            for r in self.runs
        ]
        table = [header, *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in table]  # fmt: skip
        errors = [f"{r.name}: {r.error}" for r in self.runs if r.error]
        title = f"Sweep of {len(self.runs)} runs in {self.project.name}"
        return "\n".join([title, *lines, *errors])

    def __repr__(self) -> str:
        return self.text()


def plan(
    cell: str,
    namespace: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    options: PackageOptions,
    base_name: str = "sweep",
    max_runs: int = DEFAULT_MAX_RUNS,
) -> list[SweepRun]:
    """Every run of the sweep, packaged: nothing is submitted if any cannot be."""
    runs = []
    for values in check(grid, cell, max_runs):
        swept = replace(options, swept=tuple(values))
        try:
            bundle = package_cell(cell, {**namespace, **values}, swept)
        except BtJupyterError as exc:
            shown = ", ".join(f"{k}={value_text(v)}" for k, v in values.items())
            raise SweepError(f"the run with {shown}: {exc}") from None
        runs.append(SweepRun(dict(values), run_name(base_name, values), bundle))
    return runs
