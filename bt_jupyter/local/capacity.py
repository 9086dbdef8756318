"""GPU capacity and the PENDING queue, as Baseten gates training jobs.

Baseten gates a job by its (org, GPU type) pool: a job whose GPUs (``gpu_count`` times
nodes) do not fit in what the pool has free waits as PENDING. Waiting jobs are released
highest priority first, then first submitted, and one that does not fit holds back those
behind it in its pool (head of line). CPU-only jobs are not gated.

Here a pool's limit is this machine's GPUs of that type (``nvidia-smi``), or what the
service's settings say (``BT_JUPYTER_GPU_CAPACITY=H100:1,A100:8``); a team's cap is set
with ``PATCH /v1/training/capacity``. A GPU type with no limit is not gated: jobs asking
for GPUs this machine lacks run on its CPU stand-in, as they always have.

This module is the policy only (what to release, why the rest waits); ``state`` applies
it to the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bt_jupyter import limits, spec
from bt_jupyter.local.store import JobRow

#: What a PENDING job says until the queue has looked at it (within a moment).
FIRST_WAIT = "Waiting for capacity: GPUs of its type are in use."


@dataclass(frozen=True)
class Demand:
    """The GPUs a job holds while it runs, in its pool."""

    gpu_type: str
    gpus: int


def demand_of(job_spec: Mapping[str, Any]) -> Demand | None:
    """The job's GPUs (None for a CPU-only job, which no pool gates). Read tolerantly: a
    stored spec is the service's own, but an older one may lack fields."""
    compute = job_spec.get("compute")
    compute = compute if isinstance(compute, dict) else {}
    accelerator = compute.get("accelerator")
    if not isinstance(accelerator, dict):
        return None
    gpu_type = accelerator.get("accelerator")
    if not isinstance(gpu_type, str) or gpu_type not in spec.ACCELERATORS:
        return None
    count, nodes = accelerator.get("count", 1), compute.get("node_count", 1)
    count = count if isinstance(count, int) and count > 0 else 1
    nodes = nodes if isinstance(nodes, int) and nodes > 0 else 1
    return Demand(gpu_type, min(count, limits.MAX_GPUS_PER_NODE) * nodes)


@dataclass(frozen=True)
class Wait:
    """Why a PENDING job waits, and where it is in its pool's queue (1 = next)."""

    position: int
    reason: str


@dataclass
class Plan:
    """What to do now: jobs to release (to CREATED), and why each other one waits."""

    release: list[JobRow] = field(default_factory=list)
    waiting: dict[str, Wait] = field(default_factory=dict)


def queue_order(jobs: Iterable[JobRow]) -> list[JobRow]:
    """Baseten's dequeue order: priority descending, then submitted first."""
    return sorted(jobs, key=lambda job: (-job.priority, job.created_at, job.id))


@dataclass(frozen=True)
class Limits:
    """Pool limits by GPU type (org) and by (team, GPU type)."""

    org: Mapping[str, int]
    team: Mapping[tuple[str, str], int]

    def never_fits(self, demand: Demand, team: str) -> str | None:
        """Why a job asking for ``demand`` could never start here (None if it could)."""
        for scope, limit in (
            ("this service", self.org.get(demand.gpu_type)),
            (f"team {team!r}", self.team.get((team, demand.gpu_type))),
        ):
            if limit is not None and demand.gpus > limit:
                return (
                    f"the job asks for {demand.gpus} {demand.gpu_type} GPUs but {scope} has "
                    f"at most {limit}: ask for fewer (--gpu, --nodes) or raise the capacity "
                    "(BT_JUPYTER_GPU_CAPACITY, PATCH /v1/training/capacity)"
                )
        return None


def plan(
    pending: Iterable[JobRow],
    active: Iterable[JobRow],
    limits_: Limits,
    team_of: Mapping[str, str],
) -> Plan:
    """Release what fits, in queue order, per pool; say why the others wait."""
    org_use: Counter[str] = Counter()
    team_use: Counter[tuple[str, str]] = Counter()
    holders: dict[str, list[str]] = {}
    for job in active:
        demand = demand_of(job.spec)
        if demand is not None:
            org_use[demand.gpu_type] += demand.gpus
            team_use[(team_of.get(job.project_id, ""), demand.gpu_type)] += demand.gpus
            holders.setdefault(demand.gpu_type, []).append(job.id)
    result = Plan()
    blocked: Counter[str] = Counter()  # waiting jobs per pool so far (head of line)
    for job in queue_order(pending):
        demand = demand_of(job.spec)
        if demand is None:
            result.release.append(job)
            continue
        pool, team = demand.gpu_type, team_of.get(job.project_id, "")
        org_limit = limits_.org.get(pool)
        team_limit = limits_.team.get((team, pool))
        fits_org = org_limit is None or org_use[pool] + demand.gpus <= org_limit
        fits_team = team_limit is None or team_use[(team, pool)] + demand.gpus <= team_limit
        if not blocked[pool] and fits_org and fits_team:
            result.release.append(job)
            org_use[pool] += demand.gpus
            team_use[(team, pool)] += demand.gpus
            holders.setdefault(pool, []).append(job.id)
            continue
        blocked[pool] += 1
        position = blocked[pool]
        if not fits_team:
            held = f"team {team!r} uses {team_use[(team, pool)]} of its {team_limit}; "
        elif org_limit is not None:
            held = f"{org_use[pool]} of {org_limit} in use; "
        else:
            held = ""
        by = holders.get(pool, [])
        if held and by:
            shown = ", ".join(by[:3]) + (f" and {len(by) - 3} more" if len(by) > 3 else "")
            held = f"{held[:-2]} (by {shown}); "
        ahead = "next in the queue" if position == 1 else f"{position - 1} ahead in the queue"
        result.waiting[job.id] = Wait(
            position,
            f"Waiting for capacity: needs {demand.gpus} {pool} GPUs; {held}{ahead} "
            f"(position {position}). A higher priority starts sooner.",
        )
    return result
