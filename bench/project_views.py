"""1,000 jobs at a glance: the four job lists with 1,000 jobs in one project, 10,000 in all.

The jobs are rows written straight into the store of a private local service (ended
jobs, COMPLETED or FAILED, with the specs ``%%bt_train`` sends: no process runs), spread
over ``--projects`` projects, ``--big`` of them in one. Each view is then timed
``--repeat`` times (after a warm-up):

1. ``%bt_jobs`` in an in-process IPython shell, in the big project (a page of the newest);
2. ``GET /v1/training_projects/{id}/jobs`` of the big project (all its jobs, as Baseten);
3. ``POST /v1/training_jobs/search`` for the big project (all its jobs), and for every
   project (all jobs; tracked, no goal);
4. the Training sidebar's list, ``GET bt-jupyter/jobs?limit=50`` of a real Jupyter Server
   with the extension: its first page across every project (what the sidebar asks for),
   the big project's first page, and (tracked, no goal) every job without a limit.

    .venv/bin/python bench/project_views.py [--big 1000] [--total 10000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing

from _common import Bench, bench_service, fmt_s, goal, header, median, p95, table
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from sidebar_latency import jupyter_server

from bt_jupyter import api, spec
from bt_jupyter.local.store import new_id

GOAL_MEDIAN_S = 0.1
#: The page the sidebar asks for (labextension/src/store.ts).
PAGE = "50"
S = spec.TrainingJobStatus


def job_specs() -> list[dict[str, object]]:
    """What ``%%bt_train`` stores for a job: CPU and GPU, one or two nodes, with and
    without checkpointing, an uploaded bundle and environment variables."""
    artifact = api.CreateTrainingJobS3Artifact(
        s3_bucket=api.LOCAL_ARTIFACT_BUCKET, s3_key=f"bundles/{new_id(16)}.tgz"
    )
    specs = []
    for gpu, nodes, checkpoints in [(None, 1, False), ("H100:8", 2, True), ("A10G", 1, True)]:
        job = spec.TrainingJob(
            image=spec.Image(base_image="pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"),
            compute=spec.Compute(node_count=nodes, accelerator=gpu, memory="64Gi", cpu_count=8),
            runtime=spec.Runtime(
                start_commands=["pip install -r requirements.txt", "python bt_entry.py"],
                environment_variables={"HF_HOME": "/cache/hf", "WANDB_MODE": "offline"},
                checkpointing_config=spec.CheckpointingConfig(enabled=checkpoints),
            ),
        )
        specs.append(api.CreateTrainingJobV1.of(job, [artifact]).model_dump(mode="json"))
    return specs


def seed(bench: Bench, big: int, total: int, projects: int) -> api.TrainingProjectV1:
    """Insert ``total`` ended jobs, ``big`` of them in the returned project, the rest spread
    over ``projects - 1`` others; one job a minute, projects interleaved."""
    owners = [bench.client.upsert_project("views-big")]
    owners += [bench.client.upsert_project(f"views-{n}") for n in range(1, projects)]
    pick = [owners[0].id] * big + [owners[1 + n % (projects - 1)].id for n in range(total - big)]
    random.Random(7).shuffle(pick)
    specs, now = job_specs(), time.time()
    jobs, history = [], []
    for n, project_id in enumerate(pick):
        job_id, body = new_id(10), dict(specs[n % len(specs)], name=f"run-{n:05d}")
        status = S.FAILED if n % 7 == 0 else S.COMPLETED
        created = now - (total - n) * 60
        ended = created + 30
        jobs.append((job_id, project_id, body["name"], json.dumps(body), status.value,
                     "exit code 1" if status == S.FAILED else None,
                     body["compute"]["node_count"], created, ended))  # fmt: skip
        history += [(job_id, S.CREATED.value, created), (job_id, S.RUNNING.value, created + 1)]
        history.append((job_id, status.value, ended))
    with closing(sqlite3.connect(bench.home.db, timeout=60)) as db, db:
        db.executemany(
            "INSERT INTO jobs (id, project_id, name, spec, status, error_message, node_count,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            jobs,
        )
        db.executemany("INSERT INTO status_history VALUES (?, ?, ?)", history)
    return owners[0]


def timed(call: Callable[[], int], repeat: int) -> tuple[list[float], int]:
    """Seconds of each of ``repeat`` calls (after two warm-ups), and what the last counted."""
    count = call() and call()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        count = call()
        seconds.append(time.perf_counter() - start)
    return seconds, count


def magic_shell(project: str) -> InteractiveShell:
    """IPython with the magics, in ``project`` (the service is the bench's: BT_JUPYTER_HOME)."""
    shell = InteractiveShell.instance()
    with capture_output():
        shell.run_line_magic("load_ext", "bt_jupyter")
        shell.run_line_magic("bt_project", project)
        shell.run_line_magic("config", "BtMagics.follow_in_terminal = False")
    return shell


def bt_jobs(shell: InteractiveShell) -> int:
    """Run ``%bt_jobs``; the number of lines it printed."""
    with capture_output() as out:
        shell.run_line_magic("bt_jobs", "")
    return len(out.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=1000, help="jobs in the big project")
    parser.add_argument("--total", type=int, default=10_000, help="jobs in every project")
    parser.add_argument("--projects", type=int, default=10, help="projects holding them")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each view")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    header(
        f"job lists: {args.big:,} jobs in one project, {args.total:,} in {args.projects}",
        f"each view timed {args.repeat} times after 2 warm-ups; rows inserted into the store",
    )
    results: list[tuple[str, list[float], int, bool]] = []
    with bench_service(keep=args.keep) as bench, jupyter_server(bench.home) as http:
        big = seed(bench, args.big, args.total, args.projects)
        client, shell = bench.client, magic_shell(big.name)

        def listed() -> int:
            path = f"/v1/training_projects/{big.id}/jobs"
            return len(client.request("GET", path).json()["training_jobs"])

        def searched(body: dict[str, str]) -> Callable[[], int]:
            return lambda: len(
                client.request("POST", "/v1/training_jobs/search", json=body).json()[
                    "training_jobs"
                ]
            )

        def sidebar(**params: str) -> Callable[[], int]:
            return lambda: len(http.get("/jobs", params=params).json()["jobs"])

        views: list[tuple[str, Callable[[], int], bool]] = [
            ("%bt_jobs (big project; lines)", lambda: bt_jobs(shell), True),
            ("GET project jobs (big project)", listed, True),
            ("POST search (big project)", searched({"project_id": big.id}), True),
            ("POST search (every project)", searched({}), False),
            ("sidebar GET bt-jupyter/jobs (every project)", sidebar(limit=PAGE), True),
            (
                "sidebar GET bt-jupyter/jobs (big project)",
                sidebar(project=big.name, limit=PAGE),
                True,
            ),
            ("sidebar GET bt-jupyter/jobs (every project, all)", sidebar(), False),
        ]
        for what, call, has_goal in views:
            seconds, count = timed(call, args.repeat)
            results.append((what, seconds, count, has_goal))

    table(
        ["view", "jobs / lines", "median", "p95", "max"],
        [
            [what, f"{count:,}", fmt_s(median(s)), fmt_s(p95(s)), fmt_s(max(s))]
            for what, s, count, _ in results
        ],
    )
    for what, seconds, count, has_goal in results:
        goal(
            what,
            f"median {fmt_s(median(seconds))}, p95 {fmt_s(p95(seconds))} ({count:,} shown)",
            f"median <= {GOAL_MEDIAN_S * 1000:.0f} ms" if has_goal else "none set; tracked",
            median(seconds) <= GOAL_MEDIAN_S if has_goal else None,
        )


if __name__ == "__main__":
    main()
