"""The live job widget, shown for a Job in a notebook (text in a terminal)."""

from __future__ import annotations

from typing import Any

from bt_jupyter.jobs import Job

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


def register(ipython: Any) -> None:
    formatter = ipython.display_formatter.ipython_display_formatter
    formatter.for_type(Job, display_job)
