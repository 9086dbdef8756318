"""One supervisor process per job: prepares it, runs its nodes, records everything.

The runner is detached from the service (its own session), so restarting the service
does not touch running jobs: the runner keeps writing status, logs, metrics and
checkpoints into the shared SQLite store. It walks the job through
CREATED -> DEPLOYING -> RUNNING -> COMPLETED | FAILED | STOPPED | DEPLOY_FAILED.

The service keeps one runner on standby (``--standby``: imports done, waiting for a job
id on stdin), so a submit on a warm environment reaches RUNNING without paying for a
Python start-up.

Every process a job starts ends with it, daemons that left their node's session
included: see :mod:`bt_jupyter.local.containment` (a cgroup per job, or the runner as
a subreaper, plus the job's environment marker).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from bt_jupyter import api, spec
from bt_jupyter.local import checkpoints, envs, gpus, image_cache, jobroot, weights
from bt_jupyter.local.containment import Containment
from bt_jupyter.local.home import Home, private_member
from bt_jupyter.local.log_sink import LEVEL, LogSink, levels_of
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.settings import Settings, s3_client
from bt_jupyter.local.store import CheckpointRow, JobRow, MetricRow, Store
from bt_jupyter.spec import TrainingJobStatus

S = TrainingJobStatus
MAX_LINE = 64 * 1024
#: A node's output is read this much at a time (and its pipe made this big).
READ_BYTES = 1 << 20
#: Output with no line end is held up to this much, then stored as a line anyway.
MAX_PARTIAL = 16 * MAX_LINE
#: fcntl's F_SETPIPE_SZ (Linux; Python names it only from 3.10 on some builds).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
ERROR, DEBUG = LEVEL["ERROR"], LEVEL["DEBUG"]
SAMPLE_SECONDS = 2.0
#: How often a running job marks its layers used (see local/image_cache.py).
LAYERS_USED_S = 3600.0
FAIL_FAST_GRACE = 5.0
#: The longest wait for a node's output readers once its processes are gone (a process
#: that escaped containment with the pipe open would hold them forever).
DRAIN_TIMEOUT_S = 60.0
#: How bt_jupyter.runtime reports a cell's ``raise SystemExit("why")``: the job's error.
SYSTEM_EXIT = "SystemExit: "


class CannotStart(Exception):
    """The job cannot start; the message says why and what to do."""


@dataclass
class Node:
    rank: int
    proc: subprocess.Popen[bytes]
    ps: psutil.Process
    gpu_indices: list[int]
    last_error: str = ""
    saw_error: bool = False
    readers: list[threading.Thread] = field(default_factory=list)

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


class Runner:
    def __init__(self, home: Home, store: Store, job: JobRow, settings: Settings) -> None:
        self.home, self.store, self.job, self.settings = home, store, job, settings
        self.dir = home.job_dir(job.id)
        self.spec: dict[str, Any] = job.spec
        self.nodes: list[Node] = []
        #: The layers each node's environment sees, top first, and each node's own (envs).
        self.layers: list[envs.Layer] = []
        self.node_envs: list[envs.Layer] = []
        # A plain flag, not a threading.Event: the SIGTERM handler sets it, and a handler
        # runs on the main thread, maybe inside Event.wait() with the Event's lock held
        # (setting the Event there deadlocked the runner).
        self.stop_requested = False
        secret_values = self._secret_values()
        self.log = LogSink(store, job.id, secret_values)
        #: Where the job's processes are kept; set as the run begins (a subreaper).
        self.contain: Containment | None = None
        #: Mirrored weights by mount location (each node sees them there; see jobroot).
        self.mounts: dict[str, Path] = {}
        #: True while weights are mirrored (a stop then interrupts the download).
        self.mirroring = False

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> TrainingJobStatus:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store.set_runner(self.job.id, os.getpid(), psutil.Process().create_time())
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.contain = Containment.start(
            self.job.id, self.dir, self.log.add, self.settings.containment
        )
        try:
            final, message = self._run()
        except Exception as exc:  # a bug in the runner must still end the job
            final, message = S.FAILED, f"local runner error: {type(exc).__name__}: {exc}"
        finally:
            self._kill_leftovers()
        self._scan_checkpoints()
        self.log.add(
            f"Job {final.short}" + (f": {message}" if message else ""),
            level=("ERROR" if final.is_failure else "INFO"),
        )
        self.log.close()
        # an error message quotes the job's output, which may hold a secret's value
        self.store.set_status(self.job.id, final, self.log.redact(message) if message else None)
        return final

    def _on_stop(self, *_: object) -> None:
        self.stop_requested = True
        if self.mirroring:  # a download may wait on the network: leave it at once
            self.mirroring = False
            raise weights.WeightsError("stopped while mirroring weights")
        if not self.nodes:  # still preparing: end the environment build, if any
            for child in psutil.Process().children(recursive=True):
                _signal(child, signal.SIGTERM)

    def _run(self) -> tuple[TrainingJobStatus, str | None]:
        try:
            self._mirror_weights()  # while CREATED, as Baseten's BDN does
        except (weights.WeightsError, jobroot.ViewError) as exc:
            if self.stop_requested:
                return S.STOPPED, None
            return S.DEPLOY_FAILED, str(exc)
        if not self.store.set_status(self.job.id, S.DEPLOYING):
            return S.STOPPED, None  # stopped before we began
        try:
            env, plan = self._prepare()
        except CannotStart as exc:
            return S.DEPLOY_FAILED, str(exc)
        except envs.EnvBuildError as exc:
            if self.stop_requested:
                return S.STOPPED, None
            return S.DEPLOY_FAILED, f"environment: {exc}"
        self._check_stopped_elsewhere()
        if self.stop_requested:
            return S.STOPPED, None
        # RUNNING first, as a node's container runs its commands: a job's first line is
        # never stored while it still says DEPLOYING (a busy machine showed one)
        if not self.store.set_status(self.job.id, S.RUNNING):
            return S.STOPPED, None
        self._start_nodes(env, plan)
        return self._supervise()

    # ------------------------------------------------------------------ prepare

    def _secret_values(self) -> list[str]:
        """Values never to show: the env's secrets, and the tokens weights are read with."""
        store = SecretStore(self.home)
        env = self.spec.get("runtime", {}).get("environment_variables", {})
        names = [v["name"] for v in env.values() if isinstance(v, dict)]
        names += [s.auth_secret_name for s in self._weights() if s.auth_secret_name]
        return [value for name in names if (value := store.get(name)) is not None]

    def _weights(self) -> list[spec.WeightsSource]:
        raw = self.spec.get("weights") or []
        return [spec.WeightsSource.model_validate(w) for w in raw if isinstance(w, dict)]

    def _mirror_weights(self) -> None:
        """Each weights source into the machine's weights cache (reused by later jobs),
        saying how it goes in the log and as the job's phase."""
        sources = self._weights()
        if not sources:
            return
        if jobroot.unshare_prefix() is None:
            raise jobroot.ViewError(jobroot.NO_NAMESPACE)

        def report(line: str) -> None:
            if self.stop_requested:
                raise weights.WeightsError("stopped while mirroring weights")
            self.log.add(line)
            self.store.set_phase(self.job.id, line)

        store = SecretStore(self.home)
        mirror = weights.Mirror(
            self.home.root / "weights", store.get, report, self.settings.s3_endpoint
        )
        self.mirroring = True
        try:
            for source in sources:
                report(f"weights {source.source}: mirroring for {source.mount_location}")
                self.mounts[source.mount_location] = mirror.mirror(source)
        finally:
            self.mirroring = False
        self.store.set_phase(self.job.id, None)

    def _prepare(self) -> tuple[dict[str, str], list[list[int]]]:
        """Files, image stand-in, requirements layer and environment: a node's start."""
        plan = self._gpu_plan()  # first: a job that cannot get its GPUs says so on line one
        runtime = self.spec.get("runtime", {})
        stand_in = envs.StandIn.of(self.spec.get("image", {}).get("base_image", ""))
        self.log.add(stand_in.describe())
        work = self.dir / "work"
        self._unpack(runtime.get("artifacts", []), work)
        user_env = self._resolve_env(runtime.get("environment_variables", {}))
        cache = envs.default_cache()
        say = self._building_log()
        image = envs.image_layer(stand_in, cache, say)
        self.layers = [image]
        requirements = work / "requirements.txt"
        commands = runtime.get("start_commands") or []
        if envs.installs_requirements(commands) and requirements.is_file():
            layer = envs.requirements_layer(image, stand_in, requirements.read_text(), cache, say)
            if layer is not None:
                self.layers.insert(0, layer)
        self.store.set_phase(self.job.id, None)
        self.node_envs = [
            envs.node_env(self.dir / f"env-node-{rank}", image, self.layers)
            for rank in range(len(plan))
        ]
        return self._base_env(user_env, runtime), plan

    def _building_log(self) -> Callable[[str], None]:
        """The job's log, and while its environment is built, its phase (the widget's,
        the sidebar's and ``%bt_jobs``'s note): what is being installed, how long so far."""
        started = time.monotonic()

        def say(line: str) -> None:
            self.log.add(line)
            if line.startswith(("Requirements: ", "Image ")):
                what = self.log.redact(line.removeprefix("Requirements: "))[:300]
                took = time.monotonic() - started
                self.store.set_phase(
                    self.job.id, f"building its environment, {took:.0f} s so far: {what}"
                )

        return say

    def _unpack(self, artifacts: list[dict[str, str]], work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        for artifact in artifacts:
            bucket, key = artifact.get("s3_bucket"), artifact.get("s3_key", "")
            local = self.home.artifact_file(key) if bucket == api.LOCAL_ARTIFACT_BUCKET else None
            if local is not None:
                path = local
            elif bucket and bucket == self.settings.s3_bucket:
                path = self.dir / "artifact.tar"
                s3 = s3_client(self.settings)
                s3.download_file(bucket, key, str(path))  # type: ignore[attr-defined]
                self.log.add(f"Downloaded s3://{bucket}/{key}")
            else:
                path = self.dir / "no-such-artifact"
            if not path.is_file():
                raise CannotStart(
                    f"artifact s3://{bucket}/{key} is not on this machine; upload it with "
                    "PUT /v1/local/artifacts (the client does this for you)"
                )
            with tarfile.open(path) as tar:
                tar.extractall(work, filter=private_member)
            self.log.add(f"Unpacked artifact {key} ({path.stat().st_size} bytes)")

    def _resolve_env(self, env: dict[str, Any]) -> dict[str, str]:
        store = SecretStore(self.home)
        resolved: dict[str, str] = {}
        for name, value in env.items():
            if isinstance(value, dict):
                secret = store.get(value["name"])
                if secret is None:
                    raise CannotStart(
                        f"secret {value['name']!r} (for ${name}) is not set on this machine; "
                        f"run `bt-jupyter secrets set {value['name']}`"
                    )
                resolved[name] = secret
            else:
                resolved[name] = str(value)
        return resolved

    def _base_env(self, user_env: dict[str, str], runtime: dict[str, Any]) -> dict[str, str]:
        """What a Baseten node's container sees: the image's defaults, the BT_* variables
        Baseten sets, and the job's own variables. Nothing of this machine's environment
        (the service's, the notebook's: API keys, HF_TOKEN, AWS_*, PYTHONPATH) leaks in."""
        project = self.store.project(self.job.project_id)
        assert project is not None
        env = {
            "LANG": "C.UTF-8",
            "BT_TRAINING_JOB_ID": self.job.id,
            "BT_TRAINING_JOB_NAME": self.job.name or self.job.id,
            "BT_TRAINING_PROJECT_ID": project.id,
            "BT_TRAINING_PROJECT_NAME": project.name,
            "BT_RETRY_COUNT": "0",
            "BT_GROUP_SIZE": str(self.job.node_count),
            "BT_LEADER_ADDR": "127.0.0.1",
        }
        checkpointing = runtime.get("checkpointing_config") or {}
        if checkpointing.get("enabled") and checkpointing.get("checkpoint_path"):
            self.log.add(
                f"checkpoint_path {checkpointing['checkpoint_path']} is served from "
                f"{self.dir / 'checkpoints'} on this machine"
            )
        cache = runtime.get("cache_config") or {}
        if cache.get("enabled"):
            project_cache = self.home.project_cache(project.id)
            team_cache = self.home.team_cache(project.team_name)
            for folder in (project_cache, team_cache):
                folder.mkdir(parents=True, exist_ok=True)
            env.update(
                BT_PROJECT_CACHE_DIR=str(project_cache),
                BT_TEAM_CACHE_DIR=str(team_cache),
                BT_RW_CACHE_DIR=str(project_cache),
            )
            if cache.get("enable_legacy_hf_mount"):
                env["HF_HOME"] = str(project_cache / "huggingface")
        self._load_checkpoints(runtime.get("load_checkpoint_config"), env)
        env.update(user_env)
        return env

    def _load_checkpoints(self, config: dict[str, Any] | None, env: dict[str, str]) -> None:
        if not config or not config.get("enabled"):
            return
        target = self.dir / "loaded_checkpoints"
        for ref in config.get("checkpoints", []):
            job_id, name = self._resolve_checkpoint(ref)
            placed = checkpoints.place(self.home.job_dir(job_id) / "checkpoints", name, target)
            self.log.add(f"Loaded checkpoint {name} of job {job_id} ({placed} rank(s))")
        env["BT_LOAD_CHECKPOINT_DIR"] = str(target)

    def _loaded_for(self, rank: int, loaded: Path) -> str:
        """Node ``rank``'s load folder: only ``rank-<rank>/``, as a Baseten node has only
        its own rank's files (a job reading another rank's passes here, fails there)."""
        own = self.dir / f"loaded-node-{rank}"
        own.mkdir(exist_ok=True)
        if (loaded / f"rank-{rank}").is_dir() and not (own / f"rank-{rank}").exists():
            (own / f"rank-{rank}").symlink_to(loaded / f"rank-{rank}")
        return str(own)

    def _resolve_checkpoint(self, ref: dict[str, Any]) -> tuple[str, str]:
        typ = ref.get("typ")
        if typ == "baseten_named_checkpoint":
            job_id, name = ref["job_id"], ref["checkpoint_name"]
            if name not in {c.name for c in self._checkpoints_of(job_id)}:
                raise CannotStart(f"job {job_id} has no checkpoint named {name!r}")
            return job_id, name
        if typ == "baseten_latest_checkpoint":
            named = self.store.job(ref["job_id"]) if ref.get("job_id") else None
            candidates = [named] if named else []
            if not ref.get("job_id"):
                project = ref.get("project_name")
                found = self.store.project_by_name(project) if project else None
                if found is None:
                    found = self.store.project(self.job.project_id)
                candidates = self.store.jobs(project_id=found.id) if found else []
            for job in candidates:
                if job.id == self.job.id:
                    continue
                ckpts = self._checkpoints_of(job.id)
                if ckpts:
                    return job.id, ckpts[-1].name
            raise CannotStart(f"no checkpoint found to load for {ref}")
        raise CannotStart(f"checkpoint reference {typ!r} cannot be loaded locally")

    def _checkpoints_of(self, job_id: str) -> list[CheckpointRow]:
        """A job's checkpoints, oldest first (``.`` for files at the root). The ``--out``
        folder only in baseten mode: Baseten, not knowing it, resolves "latest" to it when
        it is the newest folder (the cloud client names the checkpoint instead)."""
        outputs = self.settings.baseten_mode
        found = checkpoints.scan(
            job_id, self.home.job_dir(job_id) / "checkpoints", include_outputs=outputs
        )
        return found or [
            c
            for c in self.store.checkpoints(job_id)
            if outputs or checkpoints.is_model_checkpoint(c.name)
        ]

    # ------------------------------------------------------------------ nodes

    def _gpu_plan(self) -> list[list[int]]:
        accelerator = (self.spec.get("compute") or {}).get("accelerator") or {}
        per_node = int(accelerator.get("count") or 0) if accelerator else 0
        count = self.job.node_count
        available = gpus.gpu_count() if per_node else 0
        if per_node and available >= per_node * count:
            return [list(range(r * per_node, (r + 1) * per_node)) for r in range(count)]
        if per_node:
            wanted = f"{count} x {accelerator.get('accelerator')}:{per_node}"
            if self.settings.require_gpu:
                raise CannotStart(
                    f"this machine has {available} GPU(s); the job asks for {wanted}. "
                    "Run it on Baseten, or start the local service without BT_JUPYTER_REQUIRE_GPU"
                )
            self.log.add(
                f"No GPU for this job on this machine ({available} free, {wanted} requested): "
                "running on CPU"
            )
        return [[] for _ in range(count)]

    def _start_nodes(self, base: dict[str, str], plan: list[list[int]]) -> None:
        commands = self.spec.get("runtime", {}).get("start_commands") or []
        script = "set -e\n" + "\n".join(commands) + "\n"
        work = self.dir / "work"
        checkpointing = (self.spec.get("runtime", {}).get("checkpointing_config") or {}).get(
            "enabled"
        )
        for rank, gpu_indices in enumerate(plan):
            cwd = work if rank == 0 else self._node_copy(work, rank)
            node_env = self.node_envs[rank]
            home = self.home.node_home(self.job.id, rank)
            home.mkdir(parents=True, exist_ok=True)
            path = [str(node_env.bin), *(str(layer.bin) for layer in self.layers)]
            env = {"PATH": os.pathsep.join([*path, envs.IMAGE_PATH]), "HOME": str(home)}
            env.update(base)  # the job's own variables win, PATH included, as on a node
            env.update(
                BT_NODE_RANK=str(rank),
                BT_NUM_GPUS=str(len(gpu_indices)),
                CUDA_VISIBLE_DEVICES=",".join(map(str, gpu_indices)),
            )
            if "BT_LOAD_CHECKPOINT_DIR" in base:
                env["BT_LOAD_CHECKPOINT_DIR"] = self._loaded_for(
                    rank, Path(base["BT_LOAD_CHECKPOINT_DIR"])
                )
            if checkpointing:
                ckpt = self.dir / "checkpoints" / f"rank-{rank}"
                ckpt.mkdir(parents=True, exist_ok=True)
                env["BT_CHECKPOINT_DIR"] = str(ckpt)
            assert self.contain is not None
            command = ["bash", "-c", script]
            if self.mounts:  # the node sees the weights at their mount locations
                command = jobroot.wrap(command, self.dir / f"view-node-{rank}", cwd, self.mounts)
            proc = subprocess.Popen(
                self.contain.wrap(rank, command),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            node = Node(rank, proc, psutil.Process(proc.pid), gpu_indices)
            for stream, is_err in ((proc.stdout, False), (proc.stderr, True)):
                assert stream is not None
                reader = threading.Thread(
                    target=self._read, args=(node, stream, is_err), daemon=True
                )
                reader.start()
                node.readers.append(reader)
            self.nodes.append(node)
        (self.dir / "nodes").write_text("\n".join(str(n.proc.pid) for n in self.nodes))

    def _node_copy(self, work: Path, rank: int) -> Path:
        """Each node has its own files, as on separate machines."""
        target = self.home.node_work(self.job.id, rank)
        if not target.exists():
            shutil.copytree(work, target, symlinks=True)
        return target

    def _read(self, node: Node, stream: IO[bytes], is_err: bool) -> None:
        """Reads whatever the node wrote (up to 1 MiB at a time) and hands its complete
        lines to the sink together: a job printing a million lines a second is read as
        fast as it prints."""
        fd = stream.fileno()
        with contextlib.suppress(OSError):  # a bigger pipe: the job waits less on us
            fcntl.fcntl(fd, F_SETPIPE_SZ, READ_BYTES)
        # one buffer for every read: os.read(fd, 1 MiB) maps and unmaps a megabyte each
        # time, which made a job printing flat out wait on its pipe
        buffer = bytearray(READ_BYTES)
        view = memoryview(buffer)
        partial, since = b"", time.time_ns()
        while count := os.readv(fd, [buffer]):
            end = buffer.rfind(b"\n", 0, count)
            if end < 0 and len(partial) + count < MAX_PARTIAL:
                partial += view[:count]  # no line ended yet
                continue
            if end < 0:
                end = count  # an endless line: stored in pieces
            self._lines(node, partial + view[:end], is_err, since)
            partial, since = bytes(view[end + 1 : count]), time.time_ns()
        if partial:
            self._lines(node, partial, is_err, since)
        stream.close()

    def _lines(self, node: Node, raw: bytes, is_err: bool, since: int) -> None:
        # redacted whole, before lines are cut: a secret across a cut stays hidden
        text = self.log.redact(raw.decode("utf-8", "replace"))
        lines = text.split("\n")
        if "\r" in text:  # as readline().rstrip("\r\n") would
            lines = [line.rstrip("\r") for line in lines]
        if max(map(len, lines)) > MAX_LINE:
            lines = [
                line[start : start + MAX_LINE]
                for line in lines
                for start in range(0, max(len(line), 1), MAX_LINE)
            ]
        levels = levels_of(text, lines)
        if SYSTEM_EXIT in text or is_err:
            self._note_errors(node, lines, levels, is_err)
        self.log.add_lines(lines, node.rank, levels, since)

    @staticmethod
    def _note_errors(node: Node, lines: list[str], levels: list[int], is_err: bool) -> None:
        """The error is the last ERROR line on stderr (a traceback's last line, pip's
        "ERROR: ..."), not a notice printed after it."""
        for index, line in enumerate(lines):
            if line.startswith(SYSTEM_EXIT):
                levels[index] = ERROR
            level = levels[index]
            if is_err and line.strip() and level != DEBUG:
                if level == ERROR or not node.saw_error:
                    node.last_error = line.strip()
                node.saw_error |= level == ERROR

    # ------------------------------------------------------------------ supervise

    def _supervise(self) -> tuple[TrainingJobStatus, str | None]:
        next_sample = next_status_check = next_layers_used = 0.0
        while True:
            if self.stop_requested:
                self.log.add(
                    f"Stop requested: SIGTERM to every node, {self.settings.stop_grace}s grace"
                )
                self._terminate(self.settings.stop_grace)
                return S.STOPPED, None
            failed = [n for n in self.nodes if n.proc.poll() not in (None, 0)]
            if failed:
                first = min(failed, key=lambda n: n.rank)
                # its container is gone: what it left dies with it, and lets go of its pipes
                self._end_processes(first.rank)
                self._drain(first)
                message = self._failure(first)
                others = [n for n in self.nodes if n.proc.poll() is None]
                if others:
                    self.log.add(f"{message}; stopping the other nodes", level="ERROR")
                self._terminate(FAIL_FAST_GRACE)
                return S.FAILED, message
            if all(n.proc.poll() == 0 for n in self.nodes):
                self._end_processes()  # background processes end with the job, as on a node
                for node in self.nodes:
                    self._drain(node)
                return S.COMPLETED, None
            now = time.monotonic()
            if now >= next_sample:
                assert self.contain is not None
                self.contain.reap(keep=[n.proc.pid for n in self.nodes])
                self._sample()
                self._scan_checkpoints()
                next_sample = now + SAMPLE_SECONDS
            if now >= next_layers_used:  # pruning the cache spares a running job's
                image_cache.mark_used(layer.root for layer in self.layers)
                next_layers_used = now + LAYERS_USED_S
            if now >= next_status_check:
                self._check_stopped_elsewhere()
                over = self._over_limit()
                if over:
                    self.log.add(over, level="ERROR")
                    self._terminate(0)  # as a node's OOM killer or a full volume does
                    return S.FAILED, over
                next_status_check = now + 0.5
            time.sleep(0.05)  # the SIGTERM handler's flag is seen within 50 ms

    def _over_limit(self) -> str | None:
        """Why a node must end as it would on Baseten: over its memory (the OOM killer)
        or over its checkpoint volume. None while every node is within both."""
        compute = spec.Compute.model_validate(self.spec.get("compute") or {})
        checkpointing = (self.spec.get("runtime") or {}).get("checkpointing_config") or {}
        volume = checkpointing.get("volume_size_gib") if checkpointing.get("enabled") else None
        for node in self.nodes:
            used = 0
            for proc in node.tree():
                with contextlib.suppress(psutil.Error):
                    info = proc.memory_info()  # private memory: shared libraries count once
                    used += max(info.rss - getattr(info, "shared", 0), 0)
            if used > compute.memory_bytes:
                return (
                    f"node {node.rank} ran out of memory (OOMKilled): it used "
                    f"{_gib(used)} of its {compute.memory} limit; ask for more with --memory"
                )
            if volume:
                written = _disk_usage(self.dir / "checkpoints" / f"rank-{node.rank}")
                if written > volume * 1024**3:
                    return (
                        f"node {node.rank} filled its {volume} GiB checkpoint volume "
                        f"({_gib(written)} written); ask for more with --checkpoint-volume-gib"
                    )
        return None

    def _check_stopped_elsewhere(self) -> None:
        """A stop that raced our start (the service marked the job STOPPED) stops us too."""
        current = self.store.job(self.job.id)
        if current is None or current.status == S.STOPPED:
            self.stop_requested = True

    def _drain(self, node: Node) -> None:
        """Wait for the node's output readers: its processes are gone, so they reach the
        end of its pipes at once on an idle machine; a saturated one may take seconds to
        run them, and a line read after the job's final status would miss its followers."""
        for reader in node.readers:
            reader.join(timeout=DRAIN_TIMEOUT_S)

    def _failure(self, node: Node) -> str:
        code = node.proc.returncode
        if code < 0:
            how = f"was killed by signal {signal.Signals(-code).name} ({-code})"
        elif code > 128 and code - 128 in signal.Signals._value2member_map_:
            how = f"was killed by signal {signal.Signals(code - 128).name} ({code - 128})"
        else:
            how = f"exited with code {code}"
        detail = f": {node.last_error}" if node.last_error else ""
        return f"node {node.rank} {how}{detail}"

    def _terminate(self, grace: float) -> None:
        """SIGTERM every process of the job once, wait ``grace`` seconds, then SIGKILL
        whatever is left (daemons that left the nodes' sessions included).

        Once: a node's process group gets one SIGTERM, and only processes that left it
        (their own session) get theirs directly. A second SIGTERM would re-enter a job's
        handler while it writes its final checkpoint; a container stop sends one."""
        assert self.contain is not None
        procs = self.contain.members()
        groups = {node.proc.pid for node in self.nodes}  # each node is its own session
        self.contain.terminate(procs, groups)
        psutil.wait_procs(procs, timeout=grace)  # returns as soon as all are gone
        self._end_processes()
        for node in self.nodes:
            node.proc.wait()
            self._drain(node)

    def _end_processes(self, rank: int | None = None) -> None:
        """SIGKILL what is left of the job (of node ``rank``) and say so in its log."""
        assert self.contain is not None
        running = [n.proc.pid for n in self.nodes if n.proc.returncode is None]
        ended = self.contain.end(rank, keep=running)
        for node in self.nodes:
            node.proc.poll()
        if ended:
            of = f"node {rank}" if rank is not None else "the job"
            self.log.add(f"Killed {ended} process(es) of {of} still running")

    def _kill_leftovers(self) -> None:
        """Nothing a job started outlives it, whatever way it ended."""
        if self.contain is not None:
            self._end_processes()

    # ------------------------------------------------------------------ observe

    def _sample(self) -> None:
        now = time.time()
        samples = []
        for node in self.nodes:
            cpu, rss = 0.0, 0
            for proc in node.tree():
                try:
                    cpu += proc.cpu_percent(None) / 100.0
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            samples.append(
                MetricRow(
                    node=node.rank,
                    at=now,
                    cpu_usage=cpu,
                    memory_bytes=rss,
                    gpus=gpus.gpu_samples(node.gpu_indices) if node.gpu_indices else {},
                    storage_bytes=_disk_usage(self.dir),
                )
            )
        self.store.add_metrics(self.job.id, samples)

    def _scan_checkpoints(self) -> None:
        found = checkpoints.scan(self.job.id, self.dir / "checkpoints")
        if found:
            self.store.save_checkpoints(self.job.id, found)


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def _gib(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB"


def _disk_usage(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def run_job(home: Home, job_id: str) -> int:
    store = Store(home.db)
    job = store.job(job_id)
    if job is None:
        print(f"no job {job_id}", file=sys.stderr)
        return 2
    final = Runner(home, store, job, Settings.from_env()).run()
    return 0 if final == S.COMPLETED else 1


def _redirect(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bt_jupyter.local.runner")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--job")
    parser.add_argument("--standby", action="store_true", help="wait for a job id on stdin")
    args = parser.parse_args(argv)
    home = Home(args.home)
    job_id = args.job
    if args.standby:
        job_id = sys.stdin.readline().strip()
        if not job_id:
            return 0  # the service went away or replaced us: nothing to run
    if not job_id:
        parser.error("give --job or --standby")
    os.chdir(home.root)
    home.job_dir(job_id).mkdir(parents=True, exist_ok=True)
    sys.stdin.close()
    _redirect(home.job_dir(job_id) / "runner.log")
    return run_job(home, job_id)


if __name__ == "__main__":
    sys.exit(main())
