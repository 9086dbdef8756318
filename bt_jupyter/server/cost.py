"""What a job costs, for the job panel's header: GPU-hours so far, cost so far and per hour.

On Baseten the price of the job's instance type comes from Baseten itself (the
``listed_instances`` query, where it gives one); otherwise, and for the local backend's
"would cost ~$X/h on Baseten", from the documented per-GPU-hour table.
"""

from __future__ import annotations

import threading
import time

from bt_jupyter.backends.baseten.deploy import instance_types
from bt_jupyter.jobs import Job
from bt_jupyter.pricing import gpu_cost_per_hour, listed_price_per_hour
from bt_jupyter.server.wire import JSON

#: How long Baseten's instance list is reused before it is asked again.
INSTANCES_TTL_S = 3600.0

_listed: dict[str, float] = {}
_listed_at = 0.0
_listed_lock = threading.Lock()


def _listed_prices(job: Job) -> dict[str, float]:
    """Baseten's per-minute price of each listed instance type, by id (cached an hour).
    Empty when the query fails: the table then answers, the header never breaks."""
    global _listed, _listed_at
    with _listed_lock:
        if time.monotonic() - _listed_at < INSTANCES_TTL_S and _listed_at:
            return _listed
        try:
            rows = instance_types(job.client.backend.rest)
            _listed = {row.id: row.price for row in rows if row.price}
        except Exception:  # an estimate is optional; the documented table answers
            _listed = {}
        _listed_at = time.monotonic()
        return _listed


def cost_json(job: Job, elapsed_s: float) -> JSON:
    """``{gpu_hours, per_hour, so_far, source, billed}`` of the job so far.

    ``billed`` is false on the local backend, where ``per_hour`` is what the requested
    compute would cost on Baseten."""
    instance = job.instance_type
    gpus = instance.gpu_count * max(1, job.node_count) if instance.gpu_type else 0
    hours = max(0.0, elapsed_s) / 3600
    billed = bool(job.client.backend.bills)
    per_hour, source = 0.0, "table"
    if billed and gpus:
        listed = _listed_prices(job).get(instance.id)
        hourly = listed_price_per_hour(listed or 0.0, instance.gpu_type, instance.gpu_count)
        if hourly:
            per_hour, source = hourly * max(1, job.node_count), "baseten"
    if not per_hour:
        per_hour = gpu_cost_per_hour(instance.gpu_type, instance.gpu_count, job.node_count)
    return {
        "gpu_hours": gpus * hours,
        "per_hour": per_hour,
        "so_far": per_hour * hours if billed else 0.0,
        "source": source,
        "billed": billed,
    }
