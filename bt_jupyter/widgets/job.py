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

import html
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from bt_jupyter import api, job_files, runtime, trackers
from bt_jupyter.client import log_text, node_of
from bt_jupyter.compare import summarize_metrics, thinned
from bt_jupyter.deployments import Deployment
from bt_jupyter.errors import BtJupyterError, ConnectionFailed, DownloadError
from bt_jupyter.jobs import Job
from bt_jupyter.pricing import gpu_cost_per_hour
from bt_jupyter.remote import LiveSession
from bt_jupyter.sessions import duration, expires_in, session_line

TICK_SECONDS = 0.2
TAIL_LINES = 300
METRIC_POINTS = 500
REFRESH_SECONDS = 1.0
#: How often the job's interactive sessions are asked for (and when its status changes):
#: they change rarely, and each ask is one more request to Baseten.
SESSIONS_SECONDS = 15.0
#: Points of each node's system series (CPU, memory, GPUs, disk) in the widget, and of
#: all nodes together (a 64-node job gets fewer per node: the state stays small).
SYSTEM_POINTS = 120
SYSTEM_RECORDS = 1200
TEXT_LOG_LINES = 20
#: How long the publisher waits before trying again a service it could not reach.
UNREACHABLE_WAIT_S = 1.0
#: How often a live widget's kernel says it is still there (``beat``): the view calls a
#: widget whose job is not over and whose kernel has been silent for long "disconnected".
BEAT_SECONDS = 3.0
#: Estimated on-demand price per GPU-hour (USD), for the header's cost estimate.
_HERE = Path(__file__).parent


def cost_per_hour(job: Job, prices: dict[str, float] | None = None) -> float:
    """Estimated cost per hour of the job's GPUs; 0 on the local backend."""
    if not job.client.backend.bills:
        return 0.0
    return baseten_cost_per_hour(job, prices)


def baseten_cost_per_hour(job: Job, prices: dict[str, float] | None = None) -> float:
    """What the job's requested GPUs cost per hour on Baseten (the local backend shows it
    as "would cost"); 0 for CPU-only compute or a GPU with no known price."""
    kind = job.instance_type
    return gpu_cost_per_hour(kind.gpu_type, kind.gpu_count, job.node_count, prices)


def iso_time(timestamp_ns: str | int) -> str:
    """A log line's epoch-nanosecond timestamp as ISO 8601 UTC (what people and tools read)."""
    try:
        seconds = int(timestamp_ns) / 1e9
    except ValueError:
        return str(timestamp_ns)
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def is_blank(message: str) -> bool:
    """A node's empty line: not worth a row of its own in any view."""
    return not message.strip()


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
    #: what the job's runtime warned about (``[bt-warning]`` lines), each once
    warnings: traitlets.List[str] = traitlets.List().tag(sync=True)
    log_tail: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    log_count = traitlets.Int(0).tag(sync=True)
    metrics: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    checkpoints: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: the files the cell wrote into its working folder: path, node, size
    files: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Deployments started from this widget: id, name, checkpoint, kind, status, url, error.
    deployments: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Latest CPU / memory / GPU use per node (from the job's metrics).
    resources: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: Each node's CPU, memory, GPU and disk use over time, and the cache's size: chart
    #: records ``{time, node, "CPU %": …}`` (bounded, see SYSTEM_POINTS).
    system_metrics: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: The job's open interactive sessions: per node, auth code, URL, expiry, directory.
    sessions: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)
    #: A live session's idle clock: ``idle_timeout_s``, ``idle_since`` (epoch s, 0 when
    #: not known), ``busy``, ``nodes``, ``post_mortem`` (the view counts down from these).
    live: traitlets.Dict[str, Any] = traitlets.Dict().tag(sync=True)
    #: Wall-clock seconds of the kernel's last word while the job runs (see BEAT_SECONDS).
    beat = traitlets.Float(0.0).tag(sync=True)
    #: Where the job's ``--out`` variables stand ("outputs: final → bound", or why not).
    outputs = traitlets.Unicode("").tag(sync=True)
    #: The output was updated with the job's final state (the frontend renders a new
    #: view of the widget then; the view marks itself so tests know which one is shown).
    final_output = traitlets.Bool(False).tag(sync=True)

    def __init__(self, job: Job, prices: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prices = prices
        self.watcher: JobWatcher | None = None
        self.live: dict[str, Deployment] = {}
        #: The display handle of this widget's output (set by ``display_job``): updated
        #: when the job ends, so the output's static HTML shows the final state.
        self.handle: Any = None
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
        lines += [
            "[session] " + session_line(api.AuthCodeV1.model_validate(s)) for s in self.sessions
        ]
        if self.live:
            timeout = duration(self.live["idle_timeout_s"])
            lines.append(f"[live session] stops after {timeout} without a cell")
        for line in self._last_lines():
            lines.append(log_text(line["node"], line["message"]))
        if self.outputs:
            lines.append(self.outputs)
        if self.status:
            lines.append(f"[status] {self.status.removeprefix('TRAINING_JOB_')}")
        return "\n".join(lines)

    def _last_lines(self) -> list[dict[str, Any]]:
        """The newest lines worth reading: no blank lines, no metric records."""
        readable = [
            line
            for line in self.log_tail
            if not is_blank(line["message"]) and runtime.parse_metric(line["message"]) is None
        ]
        return readable[-TEXT_LOG_LINES:]

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[Any, Any], dict[Any, Any]] | None:
        """The widget view plus a static HTML summary: what frontends without the
        widget's model (nbconvert, GitHub, an untrusted notebook) show."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        return {**data, "text/html": self.summary_html()}, metadata

    def summary_html(self) -> str:
        """Status, lifecycle, last lines, final metrics, checkpoints: static HTML."""
        return summary_html(self)

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
            "baseten_cost_per_hour": baseten_cost_per_hour(job, self.prices),
            "gpus": job.instance_type.gpu_count * job.node_count,
            "gpu_type": job.instance_type.gpu_type or "",
        }
        self.log_tail, self.log_count, self.metrics, self.checkpoints = [], 0, [], []
        # what the job handle already knows, together: a view never shows the status
        # without its error or queue notice
        self.status, self.history, self.final_output = job.status.value, [], False
        self.error, self.notice = job.error_message or "", job.notice or ""
        self._show_outputs(job)
        job.on_outputs_state.append(self._show_outputs)
        self.watcher = JobWatcher(job, self)
        self.watcher.start()

    def show_session(self, session: LiveSession) -> None:
        """Show ``session``'s idle clock, kept current as its cells run."""

        def update(current: LiveSession) -> None:
            self.live = current.clock()

        session.on_activity.append(update)
        update(session)

    def _show_outputs(self, job: Job) -> None:
        """The binding of ``--out`` moved on (called from any thread)."""
        if job is self.job:
            self.outputs = job.outputs_state.text if job.outputs_state else ""

    def _on_message(self, _: Any, content: dict[str, Any], buffers: list[bytes]) -> None:
        kind = content.get("type")
        if kind == "ping":  # the view asks whether this kernel still holds the widget
            self.send({"type": "pong"})
            return
        if kind == "stop":
            self.job.stop()
        elif kind == "recreate":
            self.watch(self.job.recreate())
            return
        elif kind == "download":
            self.send({"type": "log_file", "name": f"{self.job.id}.log", "text": self.log_file()})
        elif kind == "deploy":
            self._background(self._deploy, str(content.get("checkpoint") or "latest"))
        elif kind == "try":
            self._background(self._try, str(content["id"]), str(content.get("input", "")))
        elif kind == "stop_deployment":
            self._background(self._stop_deployment, str(content["id"]))
        elif kind == "download_file":
            self._background(self._download_file, str(content.get("path") or ""))
        elif kind == "download_checkpoint":
            self._background(self._download_checkpoint, str(content.get("checkpoint") or ""))
        if self.watcher is not None:
            self.watcher.refresh_now.set()

    def log_file(self) -> str:
        """The whole log as a file people read: ISO time, node (``runner`` for the
        runner's own lines), message."""
        rows = []
        for line in self.job.logs():
            node = line.node
            rows.append(
                f"{iso_time(line.timestamp)} {'runner' if node is None else f'node {node}'} "
                f"{line.message}"
            )
        return "\n".join(rows)

    def _background(self, work: Any, *args: Any) -> None:
        """Deploying and calling a model take seconds: never in the kernel's message loop."""

        def run() -> None:
            try:
                work(*args)
            except Exception as exc:  # shown in the widget, like any deployment error
                self.send({"type": "error", "message": f"{type(exc).__name__}: {exc}"})

        threading.Thread(target=run, daemon=True).start()

    def _download_checkpoint(self, name: str) -> None:
        """Into ``./bt_checkpoints/<job>/<name>`` (the kernel's folder: the notebook's)."""
        try:
            path = self.job.checkpoint(name).download(progress=False)
            text = f"in {path}"
        except BtJupyterError as exc:
            text = f"not downloaded: {exc}"
        self.send({"type": "checkpoint_downloaded", "checkpoint": name, "text": text})

    def _download_file(self, path: str) -> None:
        """Into ``./bt_files/<job>/<path>`` (the kernel's folder: the notebook's)."""
        try:
            found = [f for f in self.job.files() if f.path == path]
            if not found:
                raise DownloadError(f"job {self.job.id} kept no file {path!r}")
            text = f"in {found[0].download()}"
        except BtJupyterError as exc:
            text = f"not downloaded: {exc}"
        self.send({"type": "file_downloaded", "path": path, "text": text})

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
        self.warnings: list[str] = []
        self.count = 0
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.refresh_now = threading.Event()
        self.followed = threading.Event()
        self.closed = threading.Event()
        self.messages = 0  # comm messages published, for the benchmarks
        self._rank_names: set[str] = set()
        self._rank_cache: dict[str, list[int]] = {}
        self._sizes: dict[str, int] = {}
        self._files: list[dict[str, Any]] = []
        self._files_final = False  # listed once the job ended: what it kept is known
        self._seen_sizes: dict[str, int] = {}
        self._sessions_at = 0.0  # when to ask for the job's interactive sessions again
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
                                "ts": _millis(log.timestamp),
                            }
                        )
                        said = trackers.parse_warning(log.message)
                        if said is not None and said not in self.warnings:
                            self.warnings.append(said)
                        record = runtime.parse_metric(log.message)
                        if record is not None:
                            node = node_of(log.replica)
                            self.records.append(
                                record if node is None else {**record, "node": node}
                            )
                self.dirty.set()
        finally:
            self.followed.set()
            self.refresh_now.set()

    def _publish(self) -> None:
        next_refresh = next_beat = 0.0
        while not self.closed.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self.widget.beat = time.time()  # one small message: "this kernel is here"
                next_beat = now + BEAT_SECONDS
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
                self._update_output()
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

    def _ranks(self, names: set[str], live: bool = False) -> dict[str, list[int]]:
        """Which nodes wrote each checkpoint, and (in ``_sizes``) how big its files are so
        far: from its files, fetched when the set changes or, while the job runs, on each
        refresh (a checkpoint being written grows)."""
        if names != self._rank_names or (live and names) or not self._files_final:
            ranks: dict[str, set[int]] = {}
            sizes: dict[str, int] = {}
            listed = self.job.checkpoint_files()
            self._files = [
                {"path": f.path, "node": f.node, "size": f.size_bytes}
                for f in job_files.listed_files(self.job, listed)
            ]
            self._files_final = not live
            for f in listed:
                parts = f.relative_file_name.split("/")  # rank-N/<checkpoint>/... or rank-N/file
                if len(parts) > 1:
                    name = parts[1] if len(parts) > 2 else api.ROOT_CHECKPOINT
                    ranks.setdefault(name, set()).add(f.node_rank)
                    sizes[name] = sizes.get(name, 0) + f.size_bytes
            self._rank_cache = {name: sorted(r) for name, r in ranks.items()}
            self._sizes = sizes
            self._rank_names = names
        return self._rank_cache

    def _update_output(self, final: bool = True) -> None:
        """The job moved to a new status or ended: the output's static HTML and text now
        say so (a saved notebook, nbconvert and GitHub show them; JupyterLab shows them
        when the kernel is gone). Once per status, so a view is rarely redrawn."""
        if self.widget.handle is not None and not self.closed.is_set():
            if final:
                self.widget.final_output = True  # before the update: the new view reads it
            self.widget.handle.update(self.widget)

    def _growing(self, name: str, size: int) -> bool:
        """Still being written: empty, or bigger than at the previous refresh."""
        return size == 0 or size != self._seen_sizes.get(name)

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
            live = not job.status.is_terminal
            ranks = self._ranks({c.checkpoint_id for c in found}, live)
            state["files"] = self._files
            sizes = {
                c.checkpoint_id: max(c.size_bytes, self._sizes.get(c.checkpoint_id, 0))
                for c in found
            }
            state["checkpoints"] = [
                {
                    "name": c.checkpoint_id,
                    "nodes": ranks.get(c.checkpoint_id, []),
                    "type": c.checkpoint_type,
                    "size": sizes[c.checkpoint_id],
                    # growing, empty or not yet synced: the view says "writing…", not 0 MB
                    "writing": live and self._growing(c.checkpoint_id, sizes[c.checkpoint_id]),
                    "created": c.created_at.isoformat(),
                }
                for c in found
            ]
            self._seen_sizes = sizes
            if job.has_run:
                system = job.metrics()
                state["resources"] = _resources(system)
                state["system_metrics"] = _system_records(system)
            if state["status"] != self.widget.status or time.monotonic() >= self._sessions_at:
                state["sessions"] = _sessions(job)
                self._sessions_at = time.monotonic() + SESSIONS_SECONDS
        with self.lock:
            state["log_tail"] = list(self.tail)
            state["log_count"] = self.count
            state["metrics"] = thinned(self.records, METRIC_POINTS)
            state["warnings"] = list(self.warnings)
        moved = "status" in state and state["status"] != self.widget.status
        with self.widget.hold_sync():
            for name, value in state.items():
                if getattr(self.widget, name) != value:
                    setattr(self.widget, name, value)
        self.messages += 1
        if moved and not self.job.status.is_terminal:
            self._update_output(final=False)  # the end is published once all is followed


def _sessions(job: Job) -> list[dict[str, Any]]:
    """The job's sessions as the view shows them (none where the service has no such
    endpoint or answers with an error: they are an extra, never the widget's end)."""
    try:
        found = job.sessions()
    except ConnectionFailed:
        raise  # the service is away: the publisher tries again, keeping what is shown
    except BtJupyterError:
        return []
    return [{**s.model_dump(), "expires_in": expires_in(s.expires_at)} for s in found]


def _system_records(metrics: api.GetTrainingJobMetricsResponseV1) -> list[dict[str, Any]]:
    """Each node's series as chart records ``{time (s), node, name: value}``, GPUs by
    index (none where the node has none: absent, not zero), the cache on the leader."""
    by_key: dict[tuple[str, float], dict[str, Any]] = {}

    def put(node: str, name: str, series: list[api.TrainingJobMetricV1], scale: float) -> None:
        for point in series:
            moment = point.timestamp.timestamp()
            record = by_key.setdefault((node, moment), {"time": moment, "node": node})
            record[name] = round(point.value * scale, 4)

    for entry in metrics.per_node_metrics:
        node, m = entry.node_id, entry.metrics
        put(node, "CPU %", m.cpu_usage, 100)
        put(node, "memory GB", m.cpu_memory_usage_bytes, 1e-9)
        for gpu, series in sorted(m.gpu_utilization.items()):
            put(node, f"GPU {gpu} %", series, 100)
        for gpu, series in sorted(m.gpu_memory_usage_bytes.items()):
            put(node, f"GPU {gpu} memory GB", series, 1e-9)
        put(node, "disk GB", m.ephemeral_storage.usage_bytes, 1e-9)
    if metrics.cache is not None and metrics.per_node_metrics:
        put(metrics.per_node_metrics[0].node_id, "cache GB", metrics.cache.usage_bytes, 1e-9)
    records = sorted(by_key.values(), key=lambda r: r["time"])
    nodes = max(1, len(metrics.per_node_metrics))
    return thinned(records, min(SYSTEM_POINTS * nodes, max(SYSTEM_RECORDS, 20 * nodes)))


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


def _millis(timestamp_ns: str) -> int | None:
    try:
        return int(timestamp_ns) // 1_000_000
    except ValueError:
        return None


def final_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """The last value of each metric (what the static summary shows)."""
    return {name: summary.final for name, summary in summarize_metrics(records).items()}


def _readable_time(at: str) -> str:
    """``2026-12-01 16:26:12 UTC`` from an ISO timestamp (as given when it is not one)."""
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return at
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.tzinfo else "")


def summary_html(widget: JobWidget) -> str:
    """The job as static HTML: readable where the live view cannot run (no kernel, no
    widget frontend). Every value is escaped; secrets are already redacted in the logs."""
    e = html.escape
    h = widget.header
    status = widget.status.removeprefix("TRAINING_JOB_") or "?"
    parts = [
        '<div class="btj-static" data-job-id="' + e(str(h.get("id", ""))) + '">',
        f"<p><b>{e(str(h.get('name') or h.get('id', '')))}</b> <code>{e(str(h.get('id', '')))}"
        f"</code> · <b>{e(status)}</b> · project {e(str(h.get('project', '')))} · "
        f"{e(str(h.get('backend', '')))} · {e(str(h.get('compute', '')))}</p>",
    ]
    if widget.history:
        steps = " → ".join(
            f"{e(x['status'].removeprefix('TRAINING_JOB_'))} ({e(_readable_time(x['at']))})"
            for x in widget.history
        )
        parts.append(f"<p>lifecycle: {steps}</p>")
    if widget.error:
        parts.append(f"<p>error: {e(widget.error)}</p>")
    if widget.outputs:
        parts.append(f"<p>{e(widget.outputs)}</p>")
    last = final_metrics(widget.metrics)
    if last:
        values = ", ".join(f"{e(k)} = {v:.4g}" for k, v in last.items())
        parts.append(f"<p>final metrics: {values}</p>")
    if widget.checkpoints:
        names = ", ".join(f"{e(c['name'])} ({c['size'] / 1e6:.2f} MB)" for c in widget.checkpoints)
        parts.append(f"<p>checkpoints: {names}</p>")
    lines = "\n".join(e(log_text(x["node"], x["message"])) for x in widget._last_lines())
    if lines:
        parts.append(f"<pre>{lines}</pre>")
    parts.append(f"<p><i>re-attach with <code>%bt_job {e(str(h.get('id', '')))}</code></i></p>")
    parts.append("</div>")
    return "".join(parts)
