"""The live job widget, shown for a Job in a notebook (text in a terminal)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # named, not imported: register() hooks them by module and class name
    from bt_jupyter.compare import Comparison
    from bt_jupyter.jobs import Job
    from bt_jupyter.remote import LiveSession
    from bt_jupyter.sweeps import Sweep

#: The widget shown most recently for each job id in this kernel.
shown: dict[str, Any] = {}


def in_kernel() -> bool:
    """True in a Jupyter kernel (a frontend that can render widgets), False in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def display_job(job: Job) -> None:
    """IPython display hook for Job: the widget in a kernel, the text summary elsewhere."""
    from IPython.display import display

    if in_kernel():
        from bt_jupyter.widgets.job import JobWidget

        widget = shown[job.id] = JobWidget(job)
        handle = display(widget, display_id=True)  # type: ignore[no-untyped-call]
        # the watcher updates the output when the job ends (its static HTML then reads as
        # the final state in a saved notebook); wait() does it from the caller's cell too
        widget.handle = handle
        job.on_finished.append(lambda _: widget.show_final(handle))
    else:
        print(job.summary())


def display_session(session: LiveSession) -> None:
    """IPython display hook for a LiveSession: its job's widget with the idle clock."""
    if not in_kernel():
        print(session.job.summary())
        return
    display_job(session.job)
    widget = shown.get(session.job.id)
    if widget is not None:
        widget.show_session(session)


def display_runs(runs: Sweep | Comparison) -> None:
    """IPython display hook for a Sweep or a Comparison: the runs widget, or the table."""
    from IPython.display import display

    if not in_kernel():
        print(runs.text())
        return
    from bt_jupyter.sweeps import Sweep
    from bt_jupyter.widgets.runs import RunsWidget

    if isinstance(runs, Sweep):
        display(RunsWidget(sweep=runs))  # type: ignore[no-untyped-call]
    else:
        display(RunsWidget(jobs=[r.job for r in runs.runs]))  # type: ignore[no-untyped-call]


def register(ipython: Any) -> None:
    """Show jobs, sessions, sweeps and comparisons as widgets. Hooked by module and class
    name, so registering imports none of them (IPython resolves a name when such an
    object is first displayed)."""
    formatter = ipython.display_formatter.ipython_display_formatter
    formatter.for_type_by_name("bt_jupyter.jobs", "Job", display_job)
    formatter.for_type_by_name("bt_jupyter.remote.session", "LiveSession", display_session)
    formatter.for_type_by_name("bt_jupyter.sweeps", "Sweep", display_runs)
    formatter.for_type_by_name("bt_jupyter.compare", "Comparison", display_runs)
