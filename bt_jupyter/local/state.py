"""ServiceState: what every route of the local service reads and changes.

Named for what it is, the state of one running service (its home, store, settings,
runner dispatcher, API key and issued upload keys), not the service itself: service.py
runs the process, app.py assembles the HTTP app, and the routes get this object from
the :data:`State` dependency. It also owns what turns its rows into wire shapes (jobs,
projects) and the lookups that answer 404 when something is missing.
"""

from __future__ import annotations

import getpass
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from bt_jupyter import api, limits, spec
from bt_jupyter.local import capacity, checkpoints, gpus, weights
from bt_jupyter.local.dispatch import Dispatcher
from bt_jupyter.local.home import Home
from bt_jupyter.local.settings import Settings, s3_client
from bt_jupyter.local.store import JobRow, ProjectRow, Store
from bt_jupyter.local.wire import HttpError, not_found, utc

if TYPE_CHECKING:  # imported with the first session (asyncssh takes a while to import)
    from bt_jupyter.local.ssh_authority import SshAuthority
    from bt_jupyter.local.ssh_proxy import SshProxy

S = spec.TrainingJobStatus
#: Statuses of a job that holds its GPUs (released from the queue, not ended).
HOLDING = (S.CREATED.value, S.DEPLOYING.value, S.RUNNING.value)
#: How often the queue is looked at for jobs that ended (and freed their GPUs).
QUEUE_TICK_S = 0.25
#: What a queued job says (Baseten's PENDING/QUEUED jobs carry such advice).
QUEUE_ADVICE = "Waiting for capacity; the job starts when GPUs of its type are free."
#: What a job says on a service that launches none (``BT_JUPYTER_LOCAL_NO_RUN``).
NOT_RUN = "not started: this service runs no jobs (BT_JUPYTER_LOCAL_NO_RUN is set)"


class ServiceState:
    """The state behind the routes: store, home, settings and the runner dispatcher."""

    def __init__(self, home: Home, settings: Settings, dispatcher: Dispatcher) -> None:
        self.home, self.settings, self.dispatcher = home, settings, dispatcher
        self.store = Store(home.db)
        self.api_key = home.api_key()
        #: Access key ids of the blob credentials handed out (the S3 stand-in takes only these)
        #: Who creates jobs here; Baseten always names the user (truss's CLI expects one).
        self.user = api.UserV1(email=f"{getpass.getuser()}@localhost")
        #: GPUs per type this service may hand out: this machine's, then the settings'.
        self.gpu_limits = {**gpus.gpu_types(), **settings.gpu_capacity}
        self.started_at = time.time()
        self._queue_lock = threading.Lock()
        self._queue_wake = threading.Event()
        self._closed = threading.Event()
        self._queue = threading.Thread(target=self._watch_queue, name="queue", daemon=True)
        self._ssh_lock = threading.Lock()
        self._ssh: tuple[SshAuthority, SshProxy] | None = None

    def start(self) -> None:
        """Start releasing PENDING jobs as capacity frees up (a restart resumes the queue)."""
        self._queue.start()

    def sign_ssh(
        self, job: JobRow, body: api.SignSSHCertificateRequestV1
    ) -> api.SignSSHCertificateResponseV1:
        """Sign for a node of ``job``."""
        authority, proxy = self.ssh()
        return authority.sign(job, body, proxy.address)

    def ssh(self) -> tuple[SshAuthority, SshProxy]:
        """The SSH authority and proxy, started with the first session (a service whose
        user opens none pays nothing for them)."""
        from bt_jupyter.local.ssh_authority import SshAuthority
        from bt_jupyter.local.ssh_proxy import SshProxy

        with self._ssh_lock:
            if self._ssh is None:
                authority = SshAuthority(self.home)
                proxy = SshProxy(self.home, authority)
                proxy.start()
                self._ssh = (authority, proxy)
            return self._ssh

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh[1].close()
        self._closed.set()
        self._queue_wake.set()
        if self._queue.is_alive():
            self._queue.join(timeout=5)

    def release_queued(self) -> None:
        """Jobs queued when an earlier service ended: CREATED, so the dispatcher's watch
        starts them (their queue timers ended with that service)."""
        for queued in self.store.jobs(statuses=[S.QUEUED.value]):
            self.store.set_status(queued.id, S.CREATED)

    # ------------------------------------------------------------------ lookups

    def project(self, project_id: str) -> ProjectRow:
        found = self.store.project(project_id)
        if found is None:
            raise not_found("training project", project_id)
        return found

    def job(self, project_id: str, job_id: str) -> tuple[ProjectRow, JobRow]:
        project = self.project(project_id)
        job = self.store.job(job_id)
        if job is None or job.project_id != project.id:
            raise not_found(f"training job in project {project_id}", job_id)
        return project, job

    def artifact_path(self, key: str) -> Path:
        """Where the local artifact store keeps ``key``; 400 for a key that is no object key."""
        path = self.home.artifact_file(key)
        if path is None:
            raise HttpError(400, "INVALID_KEY", f"artifact key {key!r} is not a valid object key")
        return path

    def artifact_exists(self, artifact: api.CreateTrainingJobS3Artifact) -> bool:
        """In the local artifact store, or (baseten mode) in the service's S3 bucket."""
        if artifact.s3_bucket == api.LOCAL_ARTIFACT_BUCKET:
            return self.artifact_path(artifact.s3_key).is_file()
        if not self.settings.s3_bucket or artifact.s3_bucket != self.settings.s3_bucket:
            return False
        try:
            s3_client(self.settings).head_object(  # type: ignore[attr-defined]
                Bucket=artifact.s3_bucket, Key=artifact.s3_key
            )
        except Exception:
            return False
        return True

    # ------------------------------------------------------------------ wire shapes

    def job_wire(self, job: JobRow, project: ProjectRow | None = None) -> api.TrainingJobV1:
        """The job as Baseten shows it (:meth:`job_json` as the model)."""
        return api.TrainingJobV1.model_validate(self.job_json(job, project))

    def job_json(self, job: JobRow, project: ProjectRow | None = None) -> dict[str, Any]:
        """The job as Baseten shows it, as the JSON of :class:`api.TrainingJobV1` (what
        its ``model_dump(mode="json")`` gives), built without a model: a list of 1,000
        jobs spent most of its time validating models only to dump them again. Read
        tolerantly: a stored spec whose compute is absurd (written by an older service,
        or by hand) shows sane values instead."""
        project = project or self.project(job.project_id)
        compute = job.spec.get("compute")
        compute = compute if isinstance(compute, dict) else {}
        availability = compute.get("availability_model")
        if availability not in _AVAILABILITY:
            availability = spec.AvailabilityModel.DEDICATED.value
        return {
            "id": job.id,
            "created_at": _utc_json(job.created_at),
            "current_status": job.status.value,
            "error_message": job.error_message,
            "instance_type": _instance_type(compute),
            "node_count": job.node_count,
            "updated_at": _utc_json(job.updated_at),
            "training_project_id": project.id,
            "training_project": {"id": project.id, "name": project.name},
            "name": job.name,
            "checkpoint_sync_status": self.checkpoint_sync_status(job),
            "priority": job.priority,
            "availability_model": availability,
            "user": {"email": self.user.email},
        }

    def jobs_json(self, jobs: list[JobRow], project: ProjectRow | None = None) -> list[Any]:
        """:meth:`job_json` of each job; their projects are looked up once each (404 for
        a job whose project is gone, as for one job)."""
        projects = {project.id: project} if project else {}
        shown = []
        for job in jobs:
            owner = projects.get(job.project_id)
            if owner is None:
                owner = projects[job.project_id] = self.project(job.project_id)
            shown.append(self.job_json(job, owner))
        return shown

    def project_wire(self, project: ProjectRow) -> api.TrainingProjectV1:
        """The project as Baseten shows it (:meth:`project_json` as the model)."""
        return api.TrainingProjectV1.model_validate(self.project_json(project))

    def project_json(self, project: ProjectRow) -> dict[str, Any]:
        """The JSON of :class:`api.TrainingProjectV1`, with its newest job."""
        latest = self.store.latest_job(project.id)
        return {
            "id": project.id,
            "name": project.name,
            "created_at": _utc_json(project.created_at),
            "updated_at": _utc_json(project.updated_at),
            "team_name": project.team_name,
            "latest_job": self.job_json(latest, project) if latest else None,
        }

    # ------------------------------------------------------------------ checkpoint sync

    def checkpoint_sync_status(self, job: JobRow) -> str | None:
        """SYNCING while the job runs and for ``checkpoint_sync_s`` after it ended (the
        last files written are then in storage); None without checkpointing."""
        runtime = job.spec.get("runtime")
        config = runtime.get("checkpointing_config") if isinstance(runtime, dict) else None
        if not (isinstance(config, dict) and config.get("enabled")):
            return None
        if not job.status.is_terminal:
            return api.CHECKPOINT_SYNCING
        if time.time() - job.updated_at < self.settings.checkpoint_sync_s:
            return api.CHECKPOINT_SYNCING
        return api.CHECKPOINT_SYNCED

    def synced_before(self, job: JobRow) -> float | None:
        """Files written after this are not in (the stand-in's) storage yet: while the job
        runs, those of the last ``checkpoint_sync_s``; after it ended, until its final
        sync is done, also at least the last file written (its ``--out`` values)."""
        delay = self.settings.checkpoint_sync_s
        if delay <= 0:
            return None
        now = time.time()
        if not job.status.is_terminal:
            return now - delay
        if now - job.updated_at >= delay:
            return None  # the final sync is done
        root = self.home.job_dir(job.id) / "checkpoints"
        newest = max((p.stat().st_mtime for _, _, p in checkpoints.files(root)), default=0.0)
        return min(job.updated_at - delay, newest - 1e-3)

    # ------------------------------------------------------------------ job lifecycle

    def create_job(
        self,
        project: ProjectRow,
        spec_json: dict[str, Any],
        idempotency_key: str | None,
        body_hash: str | None = None,
    ) -> tuple[JobRow, bool]:
        """Create and start a job. In baseten mode it first waits in the queue (QUEUED,
        with queue advice as its message, like Baseten's) for ``queue_s`` seconds. With
        ``no_run`` it is created and ends DEPLOY_FAILED at once, never launched.
        ``body_hash`` identifies the request for its Idempotency-Key (store.py)."""
        for raw in spec_json.get("weights") or []:
            refusal = weights.scheme_refusal(spec.WeightsSource.model_validate(raw))
            if refusal:
                raise HttpError(400, "UNSUPPORTED_WEIGHTS_SOURCE", refusal)
        if self.settings.no_run:
            job, created = self.store.create_job(
                project.id, spec_json, idempotency_key, body_hash=body_hash
            )
            if created:
                self.store.set_status(job.id, S.DEPLOY_FAILED, NOT_RUN)
                job = self.store.job(job.id) or job
            return job, created
        if self.settings.baseten_mode and self.settings.queue_s > 0:
            self.gated(spec_json, project.team_name or "")  # refuses one that could never fit
            job, created = self.store.create_job(
                project.id, spec_json, idempotency_key, S.QUEUED, QUEUE_ADVICE, body_hash
            )
            if created:
                timer = threading.Timer(self.settings.queue_s, self.dequeue, (job.id,))
                timer.daemon = True
                timer.start()
            return job, created
        if self.gated(spec_json, project.team_name or ""):
            job, created = self.store.create_job(
                project.id, spec_json, idempotency_key, S.PENDING, capacity.FIRST_WAIT, body_hash
            )
            if created:
                self.schedule()  # released at once when it fits
                job = self.store.job(job.id) or job
            return job, created
        job, created = self.store.create_job(
            project.id, spec_json, idempotency_key, body_hash=body_hash
        )
        if created:
            self.dispatcher.dispatch(job.id)
        return job, created

    def dequeue(self, job_id: str) -> None:
        """QUEUED -> CREATED, then run it (not if it was stopped while queued); a job a
        GPU pool gates goes on to wait there (PENDING) instead."""
        job = self.store.job(job_id)
        try:
            gated = job is not None and self.gated(job.spec, self._team_of(job.project_id))
        except HttpError:  # a cap lowered since it was submitted: it waits, saying so
            gated = True
        if gated:
            if self.store.set_status(job_id, S.PENDING, capacity.FIRST_WAIT):
                self.schedule()
        elif self.store.set_status(job_id, S.CREATED):
            self.dispatcher.dispatch(job_id)

    # ------------------------------------------------------------------ capacity and queue

    def limits(self) -> capacity.Limits:
        teams = {key: cap for key, (cap, _) in self.store.team_capacities().items()}
        return capacity.Limits(org=self.gpu_limits, team=teams)

    def _team_of(self, project_id: str) -> str:
        project = self.store.project(project_id)
        return (project.team_name or "") if project else ""

    def gated(self, job_spec: dict[str, Any], team: str) -> bool:
        """The job's GPUs come from a pool with a limit: it waits (PENDING) for them.
        Refuses (400) a job that could never fit."""
        demand = capacity.demand_of(job_spec)
        if demand is None:
            return False
        limits_ = self.limits()
        never = limits_.never_fits(demand, team)
        if never:
            raise HttpError(400, "INSUFFICIENT_CAPACITY", never)
        return demand.gpu_type in limits_.org or (team, demand.gpu_type) in limits_.team

    def schedule(self) -> None:
        """Release the PENDING jobs that fit now (``capacity.plan``, in priority order)
        and tell each of the others why it waits and where it is in the queue."""
        with self._queue_lock:
            pending = self.store.jobs(statuses=[S.PENDING.value])
            if not pending:
                return
            holding = self.store.jobs(statuses=HOLDING)
            teams = {p.id: p.team_name or "" for p in self.store.projects()}
            plan = capacity.plan(pending, holding, self.limits(), teams)
            for job in plan.release:
                if self.store.set_status(job.id, S.CREATED):
                    self.dispatcher.dispatch(job.id)
            for job in pending:
                wait = plan.waiting.get(job.id)
                if wait is not None and wait.reason != job.error_message:
                    self.store.set_waiting_message(job.id, wait.reason)

    def wake_queue(self) -> None:
        """Something changed (a priority, a capacity, a stop): look at the queue now."""
        self._queue_wake.set()

    def _watch_queue(self) -> None:
        while not self._closed.is_set():
            self._queue_wake.wait(QUEUE_TICK_S)
            self._queue_wake.clear()
            try:
                self.schedule()
            except Exception as exc:  # keep watching; the next round may succeed
                print(f"queue watch: {exc!r}", file=sys.stderr)


async def _current(request: Request) -> ServiceState:
    """The state of the app that got the request (app.py puts it on ``app.state``)."""
    state: ServiceState = request.app.state.service
    return state


#: A route's parameter ``state: State`` is the service's state.
State = Annotated[ServiceState, Depends(_current)]


#: The availability models a job may show (others, stored by hand, show DEDICATED).
_AVAILABILITY = frozenset(m.value for m in spec.AvailabilityModel)


def _utc_json(epoch: float) -> str:
    """A stored time as pydantic writes a UTC datetime in JSON (``...T12:00:00.5Z``)."""
    return utc(epoch).isoformat().replace("+00:00", "Z")


def _instance_type(compute: dict[str, Any]) -> dict[str, Any]:
    """The JSON of :class:`api.InstanceTypeV1` for a stored compute."""
    accelerator = compute.get("accelerator")
    accelerator = accelerator if isinstance(accelerator, dict) else {}
    gpu_type = accelerator.get("accelerator")
    gpu_type = gpu_type if isinstance(gpu_type, str) and gpu_type in spec.ACCELERATORS else None
    gpu_count = _count(accelerator.get("count"), 1, limits.MAX_GPUS_PER_NODE) if gpu_type else 0
    cpus = _count(compute.get("cpu_count"), 1, limits.MAX_CPU_COUNT)
    name = f"{gpu_type}:{gpu_count}" if gpu_type else f"CPU:{cpus}"
    return {
        "id": f"local-{name}",
        "name": name,
        "memory_limit_mib": _mib(str(compute.get("memory", "2Gi"))),
        "millicpu_limit": cpus * 1000,
        "gpu_count": gpu_count,
        "gpu_type": gpu_type,
        "gpu_memory_limit_mib": None,
    }


def _count(value: Any, low: int, high: int) -> int:
    """A count of a stored spec, clamped to its bounds (``low`` where it is no integer)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return low
    return min(max(value, low), high)


def _mib(quantity: str) -> int:
    """MiB of a stored memory quantity (a row written before the cap still lists)."""
    try:
        return spec.memory_bytes(quantity) // 2**20
    except ValueError:
        return 0
