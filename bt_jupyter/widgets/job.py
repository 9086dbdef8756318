"""The live job widget: lifecycle, logs, metrics, checkpoints, Stop/Refresh/Recreate.

Kernel side of an anywidget; its front end is ``labextension/widget/job.js``, bundled
with uPlot into ``static/`` by the install's build hook (it needs no labextension to
run: any frontend that renders ipywidgets shows it). Long jobs must freeze neither the
browser nor the kernel, so the synced state is bounded (the newest log lines, a
downsampled metric series) and a background thread publishes it at most five times a
second, each publish one comm message (``hold_sync``). The thread keeps going after the
cell has finished and ends when the job does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from bt_jupyter import api, runtime
from bt_jupyter.client import log_text
from bt_jupyter.deployments import Deployment
from bt_jupyter.errors import ConnectionFailed
from bt_jupyter.jobs import Job

TICK_SECONDS = 0.2
TAIL_LINES = 300
METRIC_POINTS = 500
REFRESH_SECONDS = 1.0
TEXT_LOG_LINES = 20
#: How long the publisher waits before trying again a service it could not reach.
UNREACHABLE_WAIT_S = 1.0
#: Estimated on-demand price per GPU-hour (USD), for the header's cost estimate.
GPU_HOUR_PRICES: dict[str, float] = {
    "T4": 0.63,
    "L4": 0.85,
    "A10G": 1.21,
    "A100": 4.00,
    "H100": 6.50,
    "H100_40GB": 4.65,
    "H200": 7.50,
    "B200": 9.98,
}
_HERE = Path(__file__).parent


def cost_per_hour(job: Job, prices: dict[str, float] | None = None) -> float:
    """Estimated cost per hour of the job's GPUs; 0 on the local backend."""
    if not job.client.backend.bills or not job.instance_type.gpu_type:
        return 0.0
    price = (prices or GPU_HOUR_PRICES).get(job.instance_type.gpu_type, 0.0)
    return price * job.instance_type.gpu_count * job.node_count


class JobWidget(anywidget.AnyWidget):
    # built from labextension/widget/ (with uPlot) by the install's build hook
    _esm = _HERE / "static" / "job.js"
    _css = _HERE / "static" / "job.css"

    header: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    history: traitlets.List[dict[str, str]] = traitlets.List().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    #: Baseten's advice while the job waits for capacity (PENDING/QUEUED): not an error.
    notice = traitlets.Unicode("").tag(sync=True)
    log_tail: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    log_count = traitlets.Int(0).tag(sync=True)
    metrics: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    checkpoints: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Deployments started from this widget: id, name, checkpoint, kind, status, url, error.
    deployments: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Latest CPU / memory / GPU use per node (from the job's metrics).
    resources: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)

    def __init__(self, job: Job, prices: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prices = prices
        self.watcher: JobWatcher | None = None
        self.live: dict[str, Deployment] = {}
        self.on_msg(self._on_message)
        self.watch(job)

    def __repr__(self) -> str:
        """The text a frontend without widgets shows (nbconvert, papermill): the job, the
        statuses it reached, its last log lines, then its final status."""
        lines = [self.job.summary()]
        lines += [
            f"[status] {h['status'].removeprefix('TRAINING_JOB_')} at {h['at']}"
            for h in self.history
        ]
        for line in list(self.log_tail)[-TEXT_LOG_LINES:]:
            lines.append(log_text(line["node"], line["message"]))
        if self.status:
            lines.append(f"[status] {self.status.removeprefix('TRAINING_JOB_')}")
        return "\n".join(lines)

    def show_final(self, handle: Any) -> None:
        """Publish the finished job's full state and text from the caller's cell, so
        notebooks run without a widget frontend (nbconvert, papermill) save it too."""
        if self.watcher is not None:
            self.watcher.join(timeout=30)
        self.send_state()
        if handle is not None:
            handle.update(self)

    def watch(self, job: Job) -> None:
        """Show ``job`` (a new one after Recreate), replacing what is shown."""
        if self.watcher is not None:
            self.watcher.close()
        self.job = job
        self.header = {
            "id": job.id,
            "name": job.name or "",
            "project": job.project,
            "backend": job.client.backend.name,
            "compute": job.compute,
            "base_image": job.base_image or "",
            "created": job.created_at.isoformat(),
            "cost_per_hour": cost_per_hour(job, self.prices),
        }
        self.log_tail, self.log_count, self.metrics, self.checkpoints = [], 0, [], []
        self.watcher = JobWatcher(job, self)
        self.watcher.start()

    def _on_message(self, _: Any, content: dict[str, Any], buffers: list[bytes]) -> None:
        kind = content.get("type")
        if kind == "stop":
            self.job.stop()
        elif kind == "recreate":
            self.watch(self.job.recreate())
            return
        elif kind == "download":
            text = "\n".join(
                f"{line.timestamp} {line.replica if line.replica is not None else '-'} "
                f"{line.message}"
                for line in self.job.logs()
            )
            self.send({"type": "log_file", "name": f"{self.job.id}.log", "text": text})
        elif kind == "deploy":
            self._background(self._deploy, str(content.get("checkpoint") or "latest"))
        elif kind == "try":
            self._background(self._try, str(content["id"]), str(content.get("input", "")))
        elif kind == "stop_deployment":
            self._background(self._stop_deployment, str(content["id"]))
        if self.watcher is not None:
            self.watcher.refresh_now.set()

    def _background(self, work: Any, *args: Any) -> None:
        """Deploying and calling a model take seconds: never in the kernel's message loop."""

        def run() -> None:
            try:
                work(*args)
            except Exception as exc:  # shown in the widget, like any deployment error
                self.send({"type": "error", "message": f"{type(exc).__name__}: {exc}"})

        threading.Thread(target=run, daemon=True).start()

    def _show_deployment(self, deployment: Deployment) -> None:
        row = {
            "id": deployment.id,
            "name": deployment.name,
            "checkpoint": deployment.checkpoint,
            "kind": deployment.kind,
            "status": deployment.status,
            "url": deployment.url,
            "error": deployment.error_message or "",
        }
        self.deployments = [d for d in self.deployments if d["id"] != deployment.id] + [row]

    def _deploy(self, checkpoint: str) -> None:
        deployment = self.job.deploy(checkpoint)
        self.live[deployment.id] = deployment
        self._show_deployment(deployment)
        try:
            deployment.wait()
        finally:
            self._show_deployment(deployment.refresh())

    def _try(self, deployment_id: str, text: str) -> None:
        deployment = self.live[deployment_id]
        if deployment.kind == "model":
            answer = json.dumps(deployment.predict(json.loads(text or "{}")))
        else:
            answer = deployment.complete(text, max_tokens=32)
        self.send({"type": "try_result", "id": deployment_id, "text": answer})

    def _stop_deployment(self, deployment_id: str) -> None:
        self._show_deployment(self.live[deployment_id].stop())


class JobWatcher:
    """Follows one job and publishes the widget's state from background threads."""

    def __init__(self, job: Job, widget: JobWidget) -> None:
        self.job, self.widget = job, widget
        self.tail: deque[dict[str, Any]] = deque(maxlen=TAIL_LINES)
        self.records: list[dict[str, Any]] = []
        self.count = 0
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.refresh_now = threading.Event()
        self.followed = threading.Event()
        self.closed = threading.Event()
        self.messages = 0  # comm messages published, for the benchmarks
        self._rank_names: set[str] = set()
        self._rank_cache: dict[str, list[int]] = {}
        self._threads = [
            threading.Thread(target=self._follow, name=f"bt-follow-{job.id}", daemon=True),
            threading.Thread(target=self._publish, name=f"bt-publish-{job.id}", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self.closed.set()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _batches(self) -> Iterator[tuple[list[api.LogV1], int]]:
        """(new lines, lines skipped before them): only the newest lines and every
        metric line from the local service, so a flood of output never lags the view."""
        return self.job.log_batches(TAIL_LINES, runtime.METRIC_PREFIX)

    def _follow(self) -> None:
        try:
            for lines, skipped in self._batches():
                if self.closed.is_set():
                    return
                with self.lock:
                    self.count += skipped
                    for log in lines:
                        self.count += 1
                        self.tail.append(
                            {
                                "seq": self.count,
                                "node": log.replica,
                                "level": log.level.value if log.level else None,
                                "message": log.message,
                            }
                        )
                        record = runtime.parse_metric(log.message)
                        if record is not None:
                            self.records.append(record)
                self.dirty.set()
        finally:
            self.followed.set()
            self.refresh_now.set()

    def _publish(self) -> None:
        next_refresh = 0.0
        while not self.closed.is_set():
            now = time.monotonic()
            refresh = self.refresh_now.is_set() or now >= next_refresh
            if self.dirty.is_set() or refresh:
                if not self._sent(refresh):
                    self.closed.wait(UNREACHABLE_WAIT_S)
                    continue
                if refresh:
                    self.refresh_now.clear()
                    next_refresh = now + REFRESH_SECONDS
            ended = self.followed.is_set() and self.job.status.is_terminal
            if ended and not self.dirty.is_set() and self._sent(refresh=True):
                return
            self.closed.wait(TICK_SECONDS)

    def _sent(self, refresh: bool) -> bool:
        """Publish; False when the service could not be reached (it may be restarting):
        the view keeps what it shows and a later tick publishes again."""
        try:
            self._send(refresh)
        except ConnectionFailed:
            self.dirty.set()
            return False
        return True

    def _ranks(self, names: set[str]) -> dict[str, list[int]]:
        """Which nodes wrote each checkpoint (from its files; fetched when the set changes)."""
        if names != self._rank_names:
            ranks: dict[str, set[int]] = {}
            for f in self.job.checkpoint_files():
                parts = f.relative_file_name.split("/")  # rank-N/<checkpoint>/... or rank-N/file
                if len(parts) > 1:
                    name = parts[1] if len(parts) > 2 else api.ROOT_CHECKPOINT
                    ranks.setdefault(name, set()).add(f.node_rank)
            self._rank_cache = {name: sorted(r) for name, r in ranks.items()}
            self._rank_names = names
        return self._rank_cache

    def _send(self, refresh: bool) -> None:
        self.dirty.clear()
        state: dict[str, Any] = {}
        if refresh:
            job = self.job.refresh()
            state["status"] = job.status.value
            state["error"] = job.error_message or ""
            state["notice"] = job.notice or ""
            state["history"] = [{"status": s.value, "at": at} for s, at in job.history()]
            found = job.checkpoints()
            ranks = self._ranks({c.checkpoint_id for c in found})
            state["checkpoints"] = [
                {
                    "name": c.checkpoint_id,
                    "nodes": ranks.get(c.checkpoint_id, []),
                    "type": c.checkpoint_type,
                    "size": c.size_bytes,
                    "created": c.created_at.isoformat(),
                }
                for c in found
            ]
            state["resources"] = _resources(job.metrics())
        with self.lock:
            state["log_tail"] = list(self.tail)
            state["log_count"] = self.count
            state["metrics"] = _downsample(self.records, METRIC_POINTS)
        with self.widget.hold_sync():
            for name, value in state.items():
                if getattr(self.widget, name) != value:
                    setattr(self.widget, name, value)
        self.messages += 1


def _resources(metrics: api.GetTrainingJobMetricsResponseV1) -> list[dict[str, Any]]:
    found = []
    for node in metrics.per_node_metrics:
        m = node.metrics
        if not m.cpu_usage:
            continue
        gpus = [series[-1].value for series in m.gpu_utilization.values() if series]
        found.append(
            {
                "node": node.node_id,
                "cpu": m.cpu_usage[-1].value,
                "memory_bytes": m.cpu_memory_usage_bytes[-1].value
                if m.cpu_memory_usage_bytes
                else 0,
                "gpu": sum(gpus) / len(gpus) if gpus else None,
            }
        )
    return found


def _downsample(records: list[dict[str, Any]], points: int) -> list[dict[str, Any]]:
    if len(records) <= points:
        return list(records)
    stride = len(records) / points
    return [records[int(i * stride)] for i in range(points - 1)] + [records[-1]]
