"""``%%bt_train`` and the ``%bt_*`` line magics: parsing only, the work is in jobs.py.

A usage mistake is one ``UsageError`` line and submits nothing. Defaults are
configurable like any IPython Configurable: ``%config BtMagics.default_project = "sft"``.
"""

from __future__ import annotations

import argparse
import contextvars
import getpass
import itertools
import json
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.utils.text import DollarFormatter
from traitlets import Bool, Float, Unicode

from bt_jupyter import limits
from bt_jupyter._lazy import lazy_module
from bt_jupyter.errors import BtJupyterError, InvalidConfigError
from bt_jupyter.runtime import NotSent
from bt_jupyter.session_kernel import DEFAULT_IDLE_TIMEOUT_S
from bt_jupyter.widgets import in_kernel

# `%load_ext bt_jupyter` only registers the magics: what they call (the client, pydantic's
# concepts, packaging) is imported when a magic first runs (bench/load_ext.py).
if TYPE_CHECKING:
    from bt_jupyter import (
        cache_summary,
        compare,
        jobs,
        magic_args,
        packaging,
        sessions,
        spec,
        sweeps,
    )
    from bt_jupyter import client as rest
    from bt_jupyter.deployments import Deployment
    from bt_jupyter.jobs import Client, Job
    from bt_jupyter.packaging import Bundle, PackageOptions
    from bt_jupyter.session_magics import SessionMagics
else:
    cache_summary = lazy_module("bt_jupyter.cache_summary")
    compare = lazy_module("bt_jupyter.compare")
    jobs = lazy_module("bt_jupyter.jobs")
    magic_args = lazy_module("bt_jupyter.magic_args")
    packaging = lazy_module("bt_jupyter.packaging")
    rest = lazy_module("bt_jupyter.client")
    sessions = lazy_module("bt_jupyter.sessions")
    spec = lazy_module("bt_jupyter.spec")
    sweeps = lazy_module("bt_jupyter.sweeps")


def _env(pairs: list[str], secrets: list[str]) -> dict[str, str | spec.SecretReference]:
    env: dict[str, str | spec.SecretReference] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--env {pair}: write it as NAME=VALUE")
        env[key] = value
    for item in secrets:
        name, _, var = item.partition(":")
        env[var or name.upper()] = spec.SecretReference(name=name)
    return env


def _load_checkpoint(value: str | None, project: str) -> spec.LoadCheckpointConfig | None:
    if not value:
        return None
    if value == "latest":
        ref: spec.LatestCheckpoint | spec.NamedCheckpoint = spec.LatestCheckpoint(
            project_name=project
        )
    elif ":" in value:
        job_id, name = value.split(":", 1)
        ref = spec.NamedCheckpoint(checkpoint_name=name, job_id=job_id)
    else:
        ref = spec.LatestCheckpoint(job_id=value)
    return spec.LoadCheckpointConfig(enabled=True, checkpoints=[ref])


def _weights(value: str, secret: str | None) -> spec.WeightsSource:
    """``hf://Qwen/Qwen3-0.6B:/models/base``: a source, then where it is mounted."""
    source, sep, mount = value.rpartition(":/")
    if not sep or "://" not in source:
        raise InvalidConfigError(
            f"--weights {limits.shown(value)}: write SOURCE:/MOUNT, e.g. "
            "hf://Qwen/Qwen3-0.6B:/models/base"
        )
    return spec.WeightsSource(source=source, mount_location=f"/{mount}", auth_secret_name=secret)


def _interactive(trigger: str | None, timeout: int | None) -> spec.InteractiveSession | None:
    """``--interactive`` and ``--interactive-timeout`` as truss train push reads them."""
    if trigger is None and timeout is None:
        return None
    session = spec.InteractiveSession()
    if trigger is not None:
        session.trigger = spec.InteractiveSessionTrigger(trigger)
    if timeout is not None:
        session.timeout_minutes = timeout
    return session


def _post_mortem_s(args: argparse.Namespace) -> float | None:
    """``--interactive on_failure``: how long a failed cell's process waits for
    ``%bt_debug`` (``--interactive-timeout`` minutes without a cell)."""
    if args.interactive != spec.InteractiveSessionTrigger.ON_FAILURE.value:
        return None
    minutes = args.interactive_timeout
    return float(minutes * 60) if minutes else float(DEFAULT_IDLE_TIMEOUT_S)


_UNSET: Any = object()
#: The longest option line whose ``$name`` and ``{expr}`` are expanded (see _expand).
EXPAND_CHARS = 4096


@dataclass
class _Awaited:
    """A job whose ``--out`` variables are to be bound when it completes."""

    job: Job
    names: tuple[str, ...]
    seq: int
    result: dict[str, Any] | str | None = None  # the values, or why there are none
    done: bool = False


class OutputBinder:
    """Binds the ``--out`` variables of jobs submitted without ``--wait`` when they end.

    A thread per job waits for it to end and fetches the values; the notebook namespace is
    then written only while no cell runs: at once when the kernel is idle, else when the
    next cell starts (``pre_run_cell``), so a running cell never sees its variables change
    under it. ``pre_execute``/``post_execute`` (silent executions too) mark a cell running;
    a lock orders the thread against them. ``job.wait()`` in a cell binds right there.

    A name the notebook re-assigned after the submit is kept, not overwritten (the job's
    value stays in ``job.outputs()``, and the line says so), as is a value a job submitted
    later already bound: the newest intent wins, never the slowest job.
    """

    def __init__(self, shell: Any, poll: float = 0.5) -> None:
        self.shell, self.poll = shell, poll
        self._lock = threading.Lock()
        self._running = False
        self._pending: list[_Awaited] = []
        #: name -> (the value it had when last seen by us, seq of the job that bound it)
        self._expected: dict[str, tuple[Any, int]] = {}
        self._seq = itertools.count()
        shell.events.register("pre_execute", self._pre_execute)
        shell.events.register("post_execute", self._post_execute)
        shell.events.register("pre_run_cell", self._pre_run_cell)

    @property
    def _ns(self) -> dict[str, Any]:
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _claim(self, names: tuple[str, ...]) -> int:
        """A new job's sequence number; remember the names' values as of its submit."""
        seq = next(self._seq)
        for name in names:
            current = self._ns.get(name, _UNSET)
            if name not in self._expected or self._expected[name][0] is not current:
                self._expected[name] = (current, -1)
        return seq

    # ---------------------------------------------------------------- jobs to watch

    def watch(self, job: Job, names: tuple[str, ...]) -> None:
        """Bind ``names`` from ``job``'s outputs when it completes (see the class)."""
        with self._lock:
            awaited = _Awaited(job, names, self._claim(names))
        job.set_outputs_state(jobs.OutputsState(names, "waiting"))
        job.on_finished.append(lambda _: self._settle_in_cell(awaited))
        # the thread prints in the submitting cell's context (its output goes there)
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(self._watch, awaited), name=f"bt-out-{job.id}", daemon=True
        ).start()

    def bind_now(self, job: Job, names: tuple[str, ...], values: dict[str, Any]) -> None:
        """Bind at once (``--wait``: the cell waited for them)."""
        with self._lock:
            awaited = _Awaited(job, names, self._claim(names), values)
            self._apply(awaited)

    def _watch(self, awaited: _Awaited) -> None:
        watched = jobs.Job(awaited.job.client, awaited.job.wire, outputs=list(awaited.names))
        while not awaited.done:
            try:
                if watched.refresh().status.is_terminal:
                    break
            except BtJupyterError:
                pass  # the service is away for a moment: ask again
            threading.Event().wait(self.poll)
        result = _outputs_of(watched)
        with self._lock:
            if awaited.done:
                return
            awaited.result = result
            if not self._running:
                self._apply(awaited)
                return
            self._pending.append(awaited)
        awaited.job.set_outputs_state(jobs.OutputsState(awaited.names, "pending"))

    def _settle_in_cell(self, awaited: _Awaited) -> None:
        """``job.wait()`` returned in a cell: bind there, the cell asked for the job's end."""
        if threading.current_thread() is not threading.main_thread() or awaited.done:
            return
        result = _outputs_of(awaited.job)
        with self._lock:
            if not awaited.done:
                awaited.result = result
                self._apply(awaited)

    # ---------------------------------------------------------------- IPython events

    def _pre_execute(self) -> None:
        with self._lock:
            self._running = True

    def _post_execute(self) -> None:
        with self._lock:
            self._running = False

    def _pre_run_cell(self, _info: Any = None) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            for awaited in pending:
                if not awaited.done:
                    self._apply(awaited)

    # ---------------------------------------------------------------- binding

    def _apply(self, awaited: _Awaited) -> None:
        """Bind (the lock is held, no cell code runs), record the state, say it."""
        awaited.done = True
        result = awaited.result
        if not isinstance(result, dict):
            state = jobs.OutputsState(awaited.names, "not_bound", str(result))
        else:
            not_sent = tuple(
                (n, str(v)) for n in awaited.names if isinstance(v := result.get(n), NotSent)
            )
            sent = [n for n in awaited.names if n in result and not isinstance(result[n], NotSent)]
            kept = tuple(n for n in sent if not self._bind(n, result[n], awaited.seq))
            job_id = awaited.job.id
            detail = f"re-assigned after the submit (job's: %bt_job {job_id}, .outputs())"
            state = jobs.OutputsState(
                awaited.names, "bound", detail if kept else "", kept, not_sent
            )
        awaited.job.set_outputs_state(state)
        print(f"{state.text} (job {awaited.job.id})", flush=True)

    def _bind(self, name: str, value: Any, seq: int) -> bool:
        current = self._ns.get(name, _UNSET)
        expected, bound_by = self._expected.get(name, (_UNSET, -1))
        if current is not _UNSET and (current is not expected or bound_by > seq):
            return False
        self._ns[name] = value
        self._expected[name] = (value, seq)
        return True


#: Jobs ``%bt_jobs`` shows unless ``--limit`` says otherwise: the newest, a screenful.
JOBS_SHOWN = 50
#: The largest ``--limit`` (0 shows every job).
MAX_JOBS_SHOWN = 10**6


def _jobs_table(jobs: list[Job]) -> str:
    """``%bt_jobs``'s table, built as one string (one write for a thousand rows)."""
    lines = [f"{'id':9} {'status':14} {'project':20} {'name':20} created"]
    for j in jobs:
        name = (j.name or "")[:20]
        created = f"{j.created_at:%Y-%m-%d %H:%M:%S}"
        lines.append(f"{j.id:9} {j.status.short:14} {j.project[:20]:20} {name:20} {created}")
        if j.notice:  # why a PENDING or QUEUED job waits, and where it is in the queue
            lines.append(f"{'':9} {j.notice}")
    return "\n".join(lines)


def _more_jobs(shown: int, total: int) -> str:
    """What ``%bt_jobs`` left out, and how to see it."""
    more = total - shown
    return (
        f"... {more:,} older job{'s' if more > 1 else ''} not shown (the newest {shown:,} of "
        f"{total:,}): add --limit 0 to show all, or --limit N for the newest N"
    )


def _outputs_of(job: Job) -> dict[str, Any] | str:
    """An ended job's ``--out`` values, or why it has none."""
    job.refresh()
    if job.status.is_failure:
        return f"job {job.status.short}" + (f": {job.error_message}" if job.error_message else "")
    if job.status.short != "COMPLETED":
        return f"the job ended {job.status.short}"
    try:
        return job.outputs()
    except BtJupyterError as exc:
        return str(exc)
    except Exception as exc:  # e.g. unpickling needs a module this kernel lacks
        return f"reading them failed: {type(exc).__name__}: {exc}"


@magics_class
class BtMagics(Magics):
    """Train on Baseten from a cell. Settings: ``%config BtMagics``."""

    default_backend = Unicode("local", help="local or baseten").tag(config=True)
    default_project = Unicode("notebook", help="project of jobs without --project").tag(config=True)
    max_value_mb = Float(100.0, help="largest notebook value sent to a job (MB)").tag(config=True)
    follow_in_terminal = Bool(
        True, help="without a widget frontend, follow a job's logs as text until it ends"
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._clients: dict[str, Client] = {}
        self._submitted: dict[str, tuple[spec.TrainingProject, Bundle]] = {}
        self._model_bundle: Bundle | None = None
        self._binder = OutputBinder(shell) if shell is not None else None
        self._cell_number: int | None = None
        if shell is not None:
            shell.events.register("pre_run_cell", self._note_cell)

    @cached_property
    def live(self) -> SessionMagics:
        """The live sessions of this notebook (%bt_session, %%bt_remote)."""
        from bt_jupyter.session_magics import SessionMagics

        return SessionMagics(self)

    def _note_cell(self, info: Any) -> None:
        """The running cell's number, as its ``In[N]`` prompt shows it (IPython counts
        a cell that stores history before it runs)."""
        count = int(self.shell.execution_count)  # type: ignore[union-attr]
        self._cell_number = count - 1 if getattr(info, "store_history", False) else count

    # ------------------------------------------------------------------ helpers

    def client(self, backend: str | None = None) -> Client:
        name = backend or self.default_backend
        if name not in self._clients:
            self._clients[name] = jobs.Client.named(name)
        return self._clients[name]

    def _job(self, job_id: str) -> Job:
        if not job_id:
            raise UsageError("give a job id (see %bt_jobs)")
        try:
            return self.client().job(job_id)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None

    def _expand(self, line: str) -> str:
        """``$name`` and ``{expr}`` in an option line, as IPython expands magic lines;
        not in a line longer than EXPAND_CHARS (IPython's expansion takes seconds there,
        forty at 65 KB: such a line is read as written)."""
        if len(line) > EXPAND_CHARS or self.shell is None:
            return line
        try:  # as IPython's var_expand: the notebook's names; a failure leaves it as is
            return str(DollarFormatter().vformat(line, args=[], kwargs=self.shell.user_ns))
        except Exception:
            return line

    @property
    def _ns(self) -> dict[str, Any]:
        """The notebook's namespace."""
        assert self.shell is not None, "BtMagics needs an IPython shell"
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _cell_name(self) -> str:
        """The running cell as IPython's tracebacks name it: ``Cell In[5]``."""
        number: int | None = self._cell_number or getattr(self.shell, "execution_count", None)
        return f"Cell In[{number}]"

    def _show(self, job: object) -> None:
        from IPython.display import display

        display(job)  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ %%bt_train

    @no_var_expand
    @cell_magic
    def bt_train(self, line: str, cell: str) -> None:
        """Run this cell as a training job: ``%%bt_train --gpu H100:8 --nodes 2``."""
        args = magic_args.parse_line(magic_args.train_parser(), self._expand(line))
        project_name = args.project or self.default_project
        try:
            project = self._project(args, project_name)
            options = packaging.PackageOptions(
                pip=tuple(args.pip),
                requirements_file=args.requirements,
                include=tuple(args.include),
                outputs=tuple(v for v in args.out.replace(",", " ").split() if v),
                base_image=args.base_image,
                image_python=args.image_python,
                gpu=bool(args.gpu),
                launcher=args.launcher,
                nproc_per_node=args.nproc_per_node,
                max_value_bytes=int(self.max_value_mb * 1_000_000),
                cell_name=self._cell_name(),
                cell_header=("%%bt_train",),
                options=magic_args.recorded_options(args),
                post_mortem_s=_post_mortem_s(args),
            )
            if options.outputs and not args.checkpointing:
                raise UsageError("--out needs checkpointing (the outputs travel as a file)")
            if args.sweep:
                self._sweep(args, project, cell, options)
                return
            bundle = packaging.package_cell(cell, self._ns, options)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        project = packaging.runs_bundle(project, bundle)
        job_spec = project.job
        if args.dry_run:
            print(
                json.dumps(
                    {"training_project": project.to_wire(), "training_job": job_spec.to_wire()},
                    indent=2,
                )
            )
            print("\n".join(packaging.describe(bundle)))
            print("dry run: nothing was submitted")
            return
        for advice in bundle.manifest.get("not_sent", []):
            print(advice)  # a file the cell names that stays behind: said before it runs
        try:
            job = self.client(args.backend).submit(project, bundle, team=args.team)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        self._submitted[job.id] = (project, bundle)
        if args.bind:
            self._ns[args.bind] = job
        if args.wait or (self.follow_in_terminal and not in_kernel()):
            # a terminal has no widget: follow the job as text (Ctrl-C detaches)
            self._wait(job, options.outputs)
            return
        if options.outputs and self._binder is not None:
            self._binder.watch(job, options.outputs)
        self._show(job)
        if job.outputs_state is not None and not in_kernel():
            print(job.outputs_state.text)  # no widget to say it

    def _sweep(
        self,
        args: argparse.Namespace,
        project: spec.TrainingProject,
        cell: str,
        options: PackageOptions,
    ) -> None:
        """``--sweep``: every combination packaged and checked, then submitted."""
        if args.out:
            raise UsageError("--out does not go with --sweep: each run would bind the same names")
        grid = sweeps.parse_grid(args.sweep)
        if args.dry_run:
            runs = sweeps.plan(cell, self._ns, grid, options, args.name or "sweep", args.sweep_max)
            print("\n".join(f"would submit  {r.name}" for r in runs))
            print(f"dry run: nothing was submitted ({len(runs)} runs)")
            return
        sweep = self.client(args.backend).sweep(
            cell,
            grid,
            project,
            namespace=self._ns,
            options=options,
            name=args.name or "sweep",
            max_parallel=args.sweep_max_parallel,
            max_runs=args.sweep_max,
            team=args.team,
        )
        if args.bind:
            self._ns[args.bind] = sweep
        if args.wait or (self.follow_in_terminal and not in_kernel()):
            print(sweep.text())
            sweep.wait()
            print(sweep.compared().text())
            return
        self._show(sweep)

    def _project(self, args: argparse.Namespace, name: str) -> spec.TrainingProject:
        if args.team is not None:
            try:
                limits.check_path_segment(args.team, "a team name")
            except ValueError as exc:
                raise InvalidConfigError(f"--team: {exc}") from None
        cache = None
        if args.cache or args.legacy_hf_cache:
            cache = spec.CacheConfig(enabled=True, enable_legacy_hf_mount=args.legacy_hf_cache)
        compute: dict[str, Any] = {"node_count": args.nodes}
        if args.gpu:
            compute["accelerator"] = args.gpu
        if args.cpu is not None:  # --cpu 0 is refused by Compute, not ignored
            compute["cpu_count"] = args.cpu
        if args.memory:
            compute["memory"] = args.memory
        if args.spot:
            compute["availability_model"] = spec.AvailabilityModel.SPOT
        return spec.TrainingProject(
            name=name,
            job=spec.TrainingJob(
                name=args.name,
                priority=args.priority,
                interactive_session=_interactive(args.interactive, args.interactive_timeout),
                weights=[_weights(w, args.weights_secret) for w in args.weights],
                image=spec.Image(base_image=args.base_image or "pending"),
                compute=spec.Compute(**compute),
                runtime=spec.Runtime(
                    environment_variables=_env(args.env, args.secret),
                    cache_config=cache,
                    checkpointing_config=spec.CheckpointingConfig(
                        enabled=args.checkpointing,
                        checkpoint_path=args.checkpoint_path,
                        volume_size_gib=args.checkpoint_volume_gib,
                    ),
                    load_checkpoint_config=_load_checkpoint(args.load_checkpoint, name),
                ),
            ),
        )

    def _wait(self, job: Job, outputs: tuple[str, ...]) -> None:
        """Stream status changes and log lines as text, then bind ``--out`` variables.

        A failure's traceback is held back and raised as :class:`JobFailed` after
        everything the job printed, with ``[status] FAILED`` said once."""
        print(f"Job {job.id} submitted to project {job.project!r} ({job.client.backend.name})")
        status = None
        hold = jobs.TracebackHold()
        try:
            for followed in job.follow():
                if followed.status != status and not followed.status.is_terminal:
                    status = followed.status
                    print(f"[status] {status.short}")
                for log in hold.feed(followed.log):
                    print(rest.log_text(log.replica, log.message))
        except KeyboardInterrupt:
            print(f"Detached; job {job.id} keeps running (%bt_job {job.id}, %bt_stop {job.id})")
            return
        job.refresh()
        shown, traceback = hold.finish(failed=job.status.is_failure)
        for log in shown:
            print(rest.log_text(log.replica, log.message))
        print(
            f"[status] {job.status.short}" + (f": {job.error_message}" if job.error_message else "")
        )
        if job.status.is_failure:
            raise job.failure(traceback or None)
        if outputs:
            values = job.outputs()  # OutputsMissing says what is missing, in one line
            if self._binder is not None:
                self._binder.bind_now(job, outputs, values)
            else:
                self._ns.update({n: v for n, v in values.items() if not isinstance(v, NotSent)})

    # ------------------------------------------------------------------ line magics

    @line_magic
    def bt_project(self, line: str) -> None:
        """``%bt_project NAME``: the project of later jobs (no argument: show it)."""
        name = line.strip()
        if name:
            try:
                limits.check_name(name, "a project name")
            except ValueError as exc:
                raise UsageError(f"%bt_project: {exc}") from None
            self.default_project = name
        print(f"project: {self.default_project}")

    @line_magic
    def bt_jobs(self, line: str) -> None:
        """``%bt_jobs [--project P] [--status S] [--all] [--limit N]``: the newest jobs as a
        table (``--limit``, default 50; 0 shows every job), saying how many more there are."""
        parser = magic_args.Parser(prog="%bt_jobs", add_help=False)
        parser.add_argument("--project")
        parser.add_argument("--status")
        parser.add_argument("--all", action="store_true")
        parser.add_argument(
            "--limit", type=magic_args.bounded(0, MAX_JOBS_SHOWN), default=JOBS_SHOWN
        )
        args = magic_args.parse_line(parser, line)
        project = None if args.all else (args.project or self.default_project)
        try:
            shown, listed = self.client().job_page(project, args.status, args.limit or None)
            hint = "" if shown or args.status else self._elsewhere(project)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        if not shown:
            print(f"no jobs{f' in project {project!r}' if project else ''}{hint}")
            return
        print(_jobs_table(shown))
        if len(shown) < listed.total:
            print(_more_jobs(len(shown), listed.total))

    @line_magic
    def bt_priority(self, line: str) -> None:
        """``%bt_priority JOB_ID N``: move a PENDING job in the queue (higher starts first)."""
        parser = magic_args.Parser(prog="%bt_priority", add_help=False)
        parser.add_argument("job_id")
        parser.add_argument(
            "priority", type=magic_args.bounded(limits.MIN_PRIORITY, limits.MAX_PRIORITY)
        )
        args = magic_args.parse_line(parser, line)
        job = self._job(args.job_id)
        if job.status != spec.TrainingJobStatus.PENDING:
            raise UsageError(
                f"%bt_priority: job {job.id} is {job.status.short}; only a PENDING job's "
                "priority can change (set it for a new job with %%bt_train --priority N)"
            )
        try:
            job.set_priority(args.priority).refresh()
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        print(f"job {job.id}: priority {args.priority}; {job.notice or job.status.short}")

    def _elsewhere(self, project: str | None) -> str:
        """A hint when other projects have jobs (after a kernel restart the default
        project is ``notebook`` again, and the jobs seem gone). The project list says
        which have jobs (their latest job), without listing every job."""
        if project is None:
            return ""
        having = {p.name for p in self.client().projects() if p.latest_job is not None}
        others = sorted(having - {project})
        if not others:
            return ""
        named = ", ".join(repr(p) for p in others[:3]) + (", ..." if len(others) > 3 else "")
        count = f"{len(others)} other project{'s' if len(others) > 1 else ''}"
        return (
            f"; {count} ha{'ve' if len(others) > 1 else 's'} jobs ({named}): "
            "%bt_jobs --all, or %bt_project NAME"
        )

    @line_magic
    def bt_job(self, line: str) -> Job:
        """``%bt_job JOB_ID``: re-attach to a job (shows its widget)."""
        return self._job(line.strip())

    @line_magic
    def bt_logs(self, line: str) -> None:
        """``%bt_logs JOB_ID [--tail N] [--node R]``."""
        parser = magic_args.Parser(prog="%bt_logs", add_help=False)
        parser.add_argument("job_id")
        parser.add_argument("--tail", type=magic_args.bounded(1, 10**9))
        parser.add_argument("--node", type=magic_args.bounded(0, limits.MAX_NODE_COUNT - 1))
        args = magic_args.parse_line(parser, line)
        job_log = self._job(args.job_id).logs(node=args.node)
        lines = job_log.tail(args.tail) if args.tail else job_log
        texts = (rest.log_text(entry.replica, entry.message) for entry in lines)
        while chunk := list(itertools.islice(texts, 10_000)):  # one write per 10,000 lines
            print("\n".join(chunk))

    @line_magic
    def bt_stop(self, line: str) -> None:
        """``%bt_stop JOB_ID`` or ``%bt_stop --all`` (every live job of the project)."""
        target = line.strip()
        if target == "--all":
            jobs = [
                j
                for j in self.client().jobs(project=self.default_project)
                if not j.status.is_terminal
            ]
        else:
            jobs = [self._job(target)]
        for job in jobs:
            if job.status.is_terminal:  # stopping it would change nothing
                print(f"job {job.id} already ended ({job.status.short}); nothing to stop")
                continue
            job.stop()
            print(f"stopping job {job.id} ({job.status.short})")
        if not jobs:
            print(f"no running jobs in project {self.default_project!r}")

    @line_magic
    def bt_cache(self, line: str) -> Any:
        """``%bt_cache [PROJECT] [--team T] [--sort filepath|size|modified|type|permissions]
        [--order asc|desc] [-o table|csv|json]``: the project's training cache, as
        ``truss train cache summarize`` shows it (a sortable table in a notebook)."""
        parser = magic_args.Parser(prog="%bt_cache", add_help=False)
        parser.add_argument("project", nargs="?")
        parser.add_argument("--team")
        parser.add_argument("--sort", choices=cache_summary.SORTS, default="filepath")
        parser.add_argument("--order", choices=["asc", "desc"], default="asc")
        parser.add_argument("-o", "--output-format", choices=["table", "csv", "json"])
        args = magic_args.parse_line(parser, line)
        try:
            view = self.client().cache(
                args.project or self.default_project, args.team, args.sort, args.order == "desc"
            )
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        if args.output_format == "csv":
            print(view.as_csv(), end="")
        elif args.output_format == "json":
            print(view.as_json())
        elif args.output_format == "table" or not in_kernel():
            print(view.as_text())
        else:
            from bt_jupyter.widgets.cache import CacheTable

            return CacheTable(view)
        return None

    @line_magic
    def bt_session(self, line: str) -> None:
        """Live sessions: ``%bt_session start [%%bt_train options] [--timeout 45m]
        [--init-distributed] [-o VAR]``, ``attach JOB_ID``, ``stop [JOB_ID]``, ``list``,
        ``status``; cells run in them with ``%%bt_remote``.

        Baseten's interactive sessions of a job (per node: auth code, URL, expiry):
        ``%bt_session JOB_ID``; ``%bt_session update JOB_ID [--trigger T] [--timeout MIN]``
        changes them (minutes are added; -1: ten years)."""
        words = line.split()
        if words and words[0] in ("start", "attach", "stop", "list", "status"):
            self.live.session(words, line)  # IPython expanded $names and {expressions}
            return
        parser = magic_args.Parser(prog="%bt_session", add_help=False)
        parser.add_argument("words", nargs="+", metavar="[update] JOB_ID")
        parser.add_argument("--trigger", choices=[t.value for t in spec.InteractiveSessionTrigger])
        parser.add_argument("--timeout", type=magic_args.bounded(-1, limits.MAX_SESSION_MINUTES))
        args = magic_args.parse_line(parser, line)
        update = args.words[0] == "update"
        if len(args.words) != 1 + update:
            raise UsageError("usage: %bt_session [update] JOB_ID [--trigger T] [--timeout MIN]")
        job = self._job(args.words[-1])
        try:
            if update:
                if args.trigger is None and args.timeout is None:
                    raise UsageError("%bt_session update: give --trigger or --timeout")
                for said in job.update_sessions(args.trigger, args.timeout):
                    print(f"job {job.id}: {said}")
            found = job.sessions()
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        if not found:
            print(f"job {job.id} has no open interactive session ({job.refresh().status.short})")
        for s in found:
            print(sessions.session_line(s))

    @no_var_expand
    @cell_magic
    def bt_remote(self, line: str, cell: str) -> None:
        """Run this cell in the live session: ``%%bt_remote [--node N | --all] [-o VAR]``
        (variables persist there; Stop interrupts the remote cell, not the session)."""
        self.live.remote(line, cell)

    @line_magic
    def bt_debug(self, line: str) -> None:
        """``%bt_debug JOB_ID [--node N]``: attach to a job that failed with
        ``--interactive on_failure``; its failing frame's locals are then in the session
        (``%%bt_remote`` cells see them; ``%debug`` there opens pdb at the failure)."""
        self.live.debug(line)

    @line_magic
    def bt_push(self, line: str) -> None:
        """``%bt_push VAR ... [--node N]``: send notebook values to the session (all nodes
        unless --node), with %%bt_train's capture rules and size limit."""
        self.live.push(line)

    @line_magic
    def bt_pull(self, line: str) -> None:
        """``%bt_pull VAR ... [--node N]``: bring session values into the notebook."""
        self.live.pull(line)

    @line_magic
    def bt_compare(self, line: str) -> None:
        """``%bt_compare JOB JOB ...`` or ``%bt_compare --project P --last 5``: their
        metrics on one chart and a table of what differed."""
        parser = magic_args.Parser(prog="%bt_compare", add_help=False)
        parser.add_argument("job_ids", nargs="*", metavar="JOB_ID")
        parser.add_argument("--project")
        parser.add_argument("--last", type=magic_args.bounded(1, 50), default=None)
        args = magic_args.parse_line(parser, line)
        if args.job_ids and args.project:
            raise UsageError("%bt_compare: name jobs, or --project P --last N, not both")
        try:
            if args.project:
                found = self.client().jobs(args.project)[: args.last or 5]
                if not found:
                    raise UsageError(f"%bt_compare: project {args.project!r} has no jobs")
                jobs = list(reversed(found))  # oldest first, as they were run
            elif args.job_ids:
                jobs = [self.client().job(job_id) for job_id in dict.fromkeys(args.job_ids)]
            else:
                raise UsageError("%bt_compare: name jobs (JOB JOB ...) or --project P --last N")
            self._show(compare.compare(jobs))
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None

    @line_magic
    def bt_checkpoints(self, line: str) -> None:
        """``%bt_checkpoints JOB_ID``: the job's checkpoints."""
        checkpoints = self._job(line.strip()).checkpoints()
        if not checkpoints:
            print("no checkpoints yet")
        for c in checkpoints:
            created = f"{c.created_at:%Y-%m-%d %H:%M:%S}"
            print(
                f"{c.checkpoint_id:30} {c.size_bytes:>14,} bytes  {c.checkpoint_type:5} {created}"
            )

    @cell_magic
    def bt_model(self, line: str, cell: str) -> None:
        """``%%bt_model``: a Truss-style ``class Model`` (load, predict) for deployments."""
        parser = magic_args.Parser(prog="%%bt_model", add_help=False)
        parser.add_argument("--pip", action="append", default=[])
        args = magic_args.parse_line(parser, line)
        try:
            bundle = packaging.package_cell(
                cell, self._ns, packaging.PackageOptions(pip=tuple(args.pip))
            )
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        if "class Model" not in cell:
            raise UsageError("%%bt_model: the cell must define `class Model` with load and predict")
        self._model_bundle = bundle
        print("model class ready: deploy a checkpoint with %bt_deploy JOB_ID [CHECKPOINT] --model")

    @line_magic
    def bt_deploy(self, line: str) -> Deployment:
        """``%bt_deploy JOB_ID [CHECKPOINT] [--name N] [--model] [--gpu G] [--hf-secret S]``:
        serve a checkpoint (``--gpu`` and ``--hf-secret`` are for Baseten's vLLM serving)."""
        parser = magic_args.Parser(prog="%bt_deploy", add_help=False)
        parser.add_argument("job_id")
        parser.add_argument("checkpoint", nargs="?", default="latest")
        parser.add_argument("--name")
        parser.add_argument("--model", action="store_true", help="use the last %%bt_model class")
        parser.add_argument("--gpu", help="Baseten: GPU to serve on, e.g. H100:1")
        parser.add_argument("--hf-secret", help="Baseten: the secret to pass as HF_TOKEN")
        args = magic_args.parse_line(parser, line)
        if args.model and self._model_bundle is None:
            raise UsageError("--model: run a %%bt_model cell first")
        job = self._job(args.job_id)
        try:
            deployment = job.deploy(
                args.checkpoint,
                args.name,
                self._model_bundle if args.model else None,
                gpu=args.gpu,
                hf_secret=args.hf_secret,
            )
            print(f"deploying {deployment.checkpoint} of job {job.id} as {deployment.name} ...")
            deployment.wait()
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        print(f"{deployment.name} is ACTIVE at {deployment.url}")
        return deployment

    @line_magic
    def bt_secret(self, line: str) -> None:
        """``%bt_secret set NAME``: store a secret for the local backend (hidden prompt)."""
        parts = line.split()
        if len(parts) != 2 or parts[0] != "set":
            raise UsageError("usage: %bt_secret set NAME (the value is asked for, never echoed)")
        from bt_jupyter.local.home import Home
        from bt_jupyter.local.secrets import SecretStore

        value = getpass.getpass(f"Value for secret {parts[1]!r}: ")
        try:
            SecretStore(Home.default()).set(parts[1], value)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(
            f"secret {parts[1]!r} saved ({len(value)} characters); use it with --secret {parts[1]}"
        )

    @line_magic
    def bt_export(self, line: str) -> None:
        """``%bt_export JOB_ID DIR [--entrypoint CMD]``: write a truss train project
        (config.py + files); ``--entrypoint`` replaces its start commands, as
        ``truss train push --entrypoint`` would."""
        parser = magic_args.Parser(prog="%bt_export", add_help=False)
        parser.add_argument("job_id")
        parser.add_argument("dir", type=Path)
        parser.add_argument("--entrypoint")
        args = magic_args.parse_line(parser, line)
        if args.job_id not in self._submitted:
            raise UsageError(
                f"job {args.job_id} was not submitted from this kernel; re-run its cell with "
                "--dry-run, or submit it again, then export"
            )
        project, bundle = self._submitted[args.job_id]
        try:
            project, _ = spec.with_push_options(project, entrypoint=args.entrypoint)
        except InvalidConfigError as exc:
            raise UsageError(f"%bt_export: {exc}") from None
        from bt_jupyter.packaging.export import export_project

        config = export_project(bundle, project, args.dir)
        print(
            f"wrote {config} and {len(bundle.files)} files; push with `truss train push {config}`"
        )

    @line_magic
    def bt_config(self, line: str) -> None:
        """``%bt_config``: backend, service URL and where the API key came from (never the key)."""
        client = self.client()
        print(f"backend: {client.backend.name}")
        print(f"url: {client.url}")
        print(f"api key: from {client.key_source}")
        print(f"project: {self.default_project}")


__all__ = ["BtMagics"]
