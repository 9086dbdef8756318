"""``%%bt_train`` and the ``%bt_*`` line magics: parsing only, the work is in jobs.py.

A usage mistake is one ``UsageError`` line and submits nothing. Defaults are
configurable like any IPython Configurable: ``%config BtMagics.default_project = "sft"``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Bool, Float, Unicode

from bt_jupyter import limits, spec
from bt_jupyter.client import log_text
from bt_jupyter.deployments import Deployment
from bt_jupyter.errors import BtJupyterError, InvalidConfigError
from bt_jupyter.jobs import Client, Job
from bt_jupyter.packaging import Bundle, PackageOptions, describe, package_cell
from bt_jupyter.packaging.export import export_project
from bt_jupyter.widgets import in_kernel


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog}?)")


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (limits.py), else one clear line."""

    def parse(raw: str) -> int:
        text = raw.strip()
        if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit()) or len(text) > 30:
            raise argparse.ArgumentTypeError(f"expected an integer, got {limits.shown(raw)}")
        try:
            return limits.check_int(int(text), low, high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "integer"  # what argparse calls the type in its messages
    return parse


def _train_parser() -> _Parser:
    p = _Parser(prog="%%bt_train", add_help=False)
    p.add_argument("-p", "--project")
    p.add_argument("--team", help="the team (name or id) whose project the job goes in")
    p.add_argument("-n", "--name")
    p.add_argument("-g", "--gpu", help="accelerator per node, e.g. H100:8")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--memory")
    p.add_argument("--spot", action="store_true")
    p.add_argument("--base-image")
    p.add_argument("--image-python", metavar="X.Y", help="the Python of an unknown --base-image")
    p.add_argument("--pip", action="append", default=[])
    p.add_argument("--requirements", type=Path)
    p.add_argument("--include", action="append", default=[])
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--secret", action="append", default=[], metavar="NAME[:ENV_VAR]")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--legacy-hf-cache", action="store_true")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--checkpoint-path")
    p.add_argument("--checkpoint-volume-gib", type=_bounded(1, limits.MAX_VOLUME_GIB))
    p.add_argument("--load-checkpoint", metavar="latest|JOB_ID[:NAME]")
    p.add_argument("--launcher", choices=["torchrun"])
    p.add_argument("--nproc-per-node", type=_bounded(1, limits.MAX_NPROC_PER_NODE))
    p.add_argument("--out", default="", metavar="VARS")
    p.add_argument("--backend", choices=["local", "baseten"])
    p.add_argument("--wait", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("-o", dest="bind", metavar="VAR")
    return p


def _parse(parser: _Parser, line: str) -> argparse.Namespace:
    try:
        return parser.parse_args(shlex.split(line))
    except ValueError as exc:  # unbalanced quotes
        raise UsageError(f"{parser.prog}: {exc}") from None


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

    # ------------------------------------------------------------------ helpers

    def client(self, backend: str | None = None) -> Client:
        name = backend or self.default_backend
        if name not in self._clients:
            self._clients[name] = Client.named(name)
        return self._clients[name]

    def _job(self, job_id: str) -> Job:
        if not job_id:
            raise UsageError("give a job id (see %bt_jobs)")
        try:
            return self.client().job(job_id)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None

    @property
    def _ns(self) -> dict[str, Any]:
        """The notebook's namespace."""
        assert self.shell is not None, "BtMagics needs an IPython shell"
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _show(self, job: Job) -> None:
        from IPython.display import display

        display(job)  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ %%bt_train

    @cell_magic
    def bt_train(self, line: str, cell: str) -> None:
        """Run this cell as a training job: ``%%bt_train --gpu H100:8 --nodes 2``."""
        args = _parse(_train_parser(), line)
        project_name = args.project or self.default_project
        try:
            project = self._project(args, project_name)
            options = PackageOptions(
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
            )
            if options.outputs and not args.checkpointing:
                raise UsageError("--out needs checkpointing (the outputs travel as a file)")
            bundle = package_cell(cell, self._ns, options)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        job_spec = project.job.model_copy(
            update={
                "image": spec.Image(base_image=bundle.base_image),
                "runtime": project.job.runtime.model_copy(
                    update={"start_commands": bundle.start_commands}
                ),
            }
        )
        project = project.model_copy(update={"job": job_spec})
        if args.dry_run:
            print(
                json.dumps(
                    {"training_project": project.to_wire(), "training_job": job_spec.to_wire()},
                    indent=2,
                )
            )
            print("\n".join(describe(bundle)))
            print("dry run: nothing was submitted")
            return
        try:
            job = self.client(args.backend).submit(project, bundle, team=args.team)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        self._submitted[job.id] = (project, bundle)
        if args.bind:
            self._ns[args.bind] = job
        if args.wait or (self.follow_in_terminal and not in_kernel()):
            # a terminal has no widget: follow the job as text (Ctrl-C detaches)
            self._wait(job, list(options.outputs))
        else:
            self._show(job)

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

    def _wait(self, job: Job, outputs: list[str]) -> None:
        """Stream status changes and log lines as text, then bind ``--out`` variables."""
        print(f"Job {job.id} submitted to project {job.project!r} ({job.client.backend.name})")
        status = None
        try:
            for followed in job.follow():
                if followed.status != status:
                    status = followed.status
                    print(f"[status] {status.short}")
                print(log_text(followed.log.replica, followed.log.message))
        except KeyboardInterrupt:
            print(f"Detached; job {job.id} keeps running (%bt_job {job.id}, %bt_stop {job.id})")
            return
        job.refresh()
        print(
            f"[status] {job.status.short}" + (f": {job.error_message}" if job.error_message else "")
        )
        if job.status.is_failure:
            raise UsageError(f"job {job.id} {job.status.short}: {job.error_message}")
        if outputs:
            values = job.outputs()
            self._ns.update(values)
            print(f"Bound {', '.join(sorted(values))} from the job's outputs")

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
        """``%bt_jobs [--project P] [--status S] [--all]``: recent jobs as a table."""
        parser = _Parser(prog="%bt_jobs", add_help=False)
        parser.add_argument("--project")
        parser.add_argument("--status")
        parser.add_argument("--all", action="store_true")
        args = _parse(parser, line)
        project = None if args.all else (args.project or self.default_project)
        try:
            jobs = self.client().jobs(project=project, status=args.status)
        except BtJupyterError as exc:
            raise UsageError(str(exc)) from None
        if not jobs:
            print(f"no jobs{f' in project {project!r}' if project else ''}")
            return
        print(f"{'id':9} {'status':14} {'project':20} {'name':20} created")
        for j in jobs:
            name = (j.name or "")[:20]
            created = f"{j.created_at:%Y-%m-%d %H:%M:%S}"
            print(f"{j.id:9} {j.status.short:14} {j.project[:20]:20} {name:20} {created}")

    @line_magic
    def bt_job(self, line: str) -> Job:
        """``%bt_job JOB_ID``: re-attach to a job (shows its widget)."""
        return self._job(line.strip())

    @line_magic
    def bt_logs(self, line: str) -> None:
        """``%bt_logs JOB_ID [--tail N] [--node R]``."""
        parser = _Parser(prog="%bt_logs", add_help=False)
        parser.add_argument("job_id")
        parser.add_argument("--tail", type=_bounded(1, 10**9))
        parser.add_argument("--node", type=_bounded(0, limits.MAX_NODE_COUNT - 1))
        args = _parse(parser, line)
        lines = self._job(args.job_id).logs(node=args.node)
        for log in lines[-args.tail :] if args.tail else lines:
            print(log_text(log.replica, log.message))

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
        parser = _Parser(prog="%%bt_model", add_help=False)
        parser.add_argument("--pip", action="append", default=[])
        args = _parse(parser, line)
        try:
            bundle = package_cell(cell, self._ns, PackageOptions(pip=tuple(args.pip)))
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
        parser = _Parser(prog="%bt_deploy", add_help=False)
        parser.add_argument("job_id")
        parser.add_argument("checkpoint", nargs="?", default="latest")
        parser.add_argument("--name")
        parser.add_argument("--model", action="store_true", help="use the last %%bt_model class")
        parser.add_argument("--gpu", help="Baseten: GPU to serve on, e.g. H100:1")
        parser.add_argument("--hf-secret", help="Baseten: the secret to pass as HF_TOKEN")
        args = _parse(parser, line)
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
        """``%bt_export JOB_ID DIR``: write a truss train project (config.py + files)."""
        parts = line.split()
        if len(parts) != 2:
            raise UsageError("usage: %bt_export JOB_ID DIR")
        if parts[0] not in self._submitted:
            raise UsageError(
                f"job {parts[0]} was not submitted from this kernel; re-run its cell with "
                "--dry-run, or submit it again, then export"
            )
        project, bundle = self._submitted[parts[0]]
        config = export_project(bundle, project, Path(parts[1]))
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
