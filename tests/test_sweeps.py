"""Sweeps and compare: a grid of runs from one cell, and runs side by side."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from bt_jupyter import Job, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.compare import CompareError, better, compare
from bt_jupyter.jobs import Client
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import PackageOptions
from bt_jupyter.sweeps import Sweep, SweepError, check, parse_grid, plan, run_name
from tests.adversarial.checks import assert_one_clear_line
from tests.conftest import magics_on

S = spec.TrainingJobStatus
CELL = """
from bt_jupyter.runtime import log_metrics
for step in range(4):
    log_metrics(step=step, loss=lr * 1000 / (step + 1) + lora_r / 100, accuracy=0.5 + step / 10)
print("trained", lr, lora_r)
"""


@pytest.fixture
def ip(local_home: Home) -> Iterator[InteractiveShell]:
    with magics_on(local_home, f"sweeps-{new_id()}") as shell:
        shell.run_cell("lr = 1e-3\nlora_r = 4\nhf_token = 'hf_never_shown'")
        yield shell


def _job_count(client: ApiClient) -> int:
    return sum(len(client.jobs(p.id)) for p in client.projects())


# --------------------------------------------------------------------------- the grid


def test_a_grid_reads_python_values_and_plain_words() -> None:
    grid = parse_grid(["lr=1e-4,3e-4", "lora_r=8,16", "optim=adamw,sgd", "warm=(1, 2),None"])
    assert grid == {
        "lr": [1e-4, 3e-4],
        "lora_r": [8, 16],
        "optim": ["adamw", "sgd"],
        "warm": [(1, 2), None],
    }
    assert run_name("sweep", {"lr": 1e-4, "lora_r": 8}) == "sweep lr=0.0001 lora_r=8"
    assert run_name("x", {"s": "a\x00b"}) == "x s=a?b"  # never a control character
    assert len(run_name("x" * 300, {"a": 1})) == 255


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        (["lr"], "--sweep 'lr': write it as NAME=V1,V2"),
        (["../x=1"], "--sweep '../x=1': write it as NAME=V1,V2"),
        (["lr="], "--sweep lr: no values"),
        (["lr=1", "lr=2"], "--sweep lr is given twice"),
    ],
)
def test_a_bad_axis_is_named(axes: list[str], message: str) -> None:
    with pytest.raises(SweepError) as caught:
        parse_grid(axes)
    assert message in str(caught.value)


def test_a_sweep_is_checked_against_what_the_cell_reads_and_its_size() -> None:
    with pytest.raises(SweepError, match=r"--sweep epochs: the cell does not read it \(it reads"):
        check({"epochs": [1, 2]}, CELL, 64)
    # a name the cell assigns before reading it is not a knob either
    with pytest.raises(SweepError, match="does not read it"):
        check({"lr": [1, 2]}, "lr = 0.1\nprint(lr)", 64)
    with pytest.raises(SweepError, match="--sweep lr: no values to try"):
        check({"lr": []}, CELL, 64)
    big = {"lr": list(range(9)), "lora_r": list(range(8))}
    with pytest.raises(SweepError, match=r"72 combinations, more than 64: .* --sweep-max 72"):
        check(big, CELL, 64)
    assert len(check(big, CELL, 72)) == 72


def test_each_run_is_packaged_with_its_values_before_anything_is_sent() -> None:
    namespace = {"lr": 0.5, "lora_r": 1, "handle": None}
    runs = plan(CELL, namespace, {"lr": [1e-4, 3e-4], "lora_r": [8]}, PackageOptions())
    assert [r.name for r in runs] == ["sweep lr=0.0001 lora_r=8", "sweep lr=0.0003 lora_r=8"]
    manifests = [r.bundle.manifest for r in runs]
    assert [m["values"] for m in manifests] == [
        {"lora_r": "8", "lr": "0.0001"},
        {"lora_r": "8", "lr": "0.0003"},
    ]
    assert all(m["swept"] == ["lr", "lora_r"] for m in manifests)
    assert runs[0].bundle.sha256 != runs[1].bundle.sha256
    # the manifest leads the archive: a reader stops after it
    with tarfile.open(fileobj=io.BytesIO(runs[0].bundle.archive), mode="r|") as tar:
        assert next(iter(tar)).name == "bt_bundle/manifest.json"
    lock = threading.Lock()
    with pytest.raises(SweepError, match=r"the run with lr=<unlocked .*: cannot send `lr`"):
        plan("print(lr)", {}, {"lr": [1e-4, lock]}, PackageOptions())


def test_bad_sweeps_in_the_magic_are_one_line_and_submit_nothing(
    ip: InteractiveShell, client: ApiClient
) -> None:
    before = _job_count(client)
    for line, message in [
        ("--sweep epochs=1,2", "the cell does not read it"),
        ("--sweep lr=", "--sweep lr: no values"),
        ("--sweep lr=1,2,3,4,5,6,7,8,9 --sweep lora_r=1,2,3,4,5,6,7,8", "72 combinations"),
        ("--sweep lr=1 --out loss", "--out does not go with --sweep"),
        ("--sweep lr=1 --sweep-max-parallel 0", "must be >= 1"),
    ]:
        with capture_output() as out:
            result = ip.run_cell(f"%%bt_train {line}\n{CELL}")
        error = result.error_in_exec
        assert type(error).__name__ == "UsageError", (line, out.stdout, out.stderr)
        assert message in str(error), (line, str(error))
        assert_one_clear_line(str(error))
    assert _job_count(client) == before


# --------------------------------------------------------------------------- a sweep


def _intervals(job: Job) -> tuple[float, float]:
    history = job.history()
    start = next(at for status, at in history if status == S.RUNNING)
    return datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(
        history[-1][1]
    ).timestamp()


@pytest.mark.timeout(300)
def test_a_sweep_of_four_runs_two_at_a_time_finishes_and_ranks_its_runs(
    ip: InteractiveShell,
) -> None:
    began = time.monotonic()
    with capture_output() as out:
        result = ip.run_cell(
            "%%bt_train --name grid --sweep lr=1e-3,3e-3 --sweep lora_r=4,8 "
            f"--sweep-max-parallel 2 --wait -o sweep\n{CELL}"
        )
    assert result.success, out.stdout[-3000:] + out.stderr[-3000:]
    sweep = ip.user_ns["sweep"]
    assert isinstance(sweep, Sweep)
    assert [r.status for r in sweep.runs] == ["COMPLETED"] * 4
    assert [r.job.name for r in sweep.runs if r.job] == [
        "grid lr=0.001 lora_r=4",
        "grid lr=0.001 lora_r=8",
        "grid lr=0.003 lora_r=4",
        "grid lr=0.003 lora_r=8",
    ]
    # never more than two at once: at each run's start, at most one other was running
    spans = [_intervals(j) for j in sweep.jobs]
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    best = sweep.best()
    assert best.label == "grid lr=0.001 lora_r=4"  # lowest loss
    assert better("loss") == "min"
    assert better("accuracy") == "max"
    text = out.stdout
    assert "value lr" in text
    assert "best loss" in text
    assert "hf_never_shown" not in text  # a secret-looking value is never shown
    print(f"sweep of 4 runs, 2 at a time: {time.monotonic() - began:.1f} s")


@pytest.mark.timeout(300)
def test_compare_shows_what_differed_and_refuses_mixed_services(
    ip: InteractiveShell, local_home: Home
) -> None:
    jobs = []
    for value in ("1e-3", "5e-3"):
        ip.run_cell(f"lr = {value}")
        with capture_output():
            result = ip.run_cell(f"%%bt_train --gpu H100:1 --env SEED=1 --wait -o run\n{CELL}")
        assert result.success
        jobs.append(ip.user_ns["run"])
    with capture_output() as out:
        ip.run_line_magic("bt_compare", " ".join(j.id for j in jobs))
    table = out.stdout
    assert "value lr" in table
    assert "0.001" in table
    assert "0.005" in table
    assert "final loss" in table
    assert "value lora_r" not in table  # the same in both: only differences by default
    full = compare(jobs).text(only_differences=False)
    assert "value lora_r" in full
    assert "--gpu" in full
    assert "H100:1" in full
    assert "--env" in full
    # a job of another service (a second local service) cannot be compared with these
    other = Client.local(local_home.root)
    other.api.base_url = "http://127.0.0.1:1"
    foreign = Job(other, jobs[0].wire)
    with pytest.raises(CompareError, match="different services"):
        compare([jobs[0], foreign])
    other.close()
    with capture_output() as out:
        ip.run_line_magic("bt_compare", f"--project {jobs[0].project} --last 2")
    assert "value lr" in out.stdout


def test_compare_of_runs_with_no_common_metric_says_so_in_one_line(
    ip: InteractiveShell,
) -> None:
    jobs = []
    for body in ("log_metrics(step=0, loss=1.0)", "log_metrics(step=0, reward=2.0)"):
        with capture_output():
            result = ip.run_cell(
                f"%%bt_train --wait -o run\nfrom bt_jupyter.runtime import log_metrics\n{body}"
            )
        assert result.success
        jobs.append(ip.user_ns["run"])
    comparison = compare(jobs)
    assert comparison.common_metrics == []
    assert comparison.note.startswith("no metric is common to these jobs")
    assert_one_clear_line(comparison.note)
    assert comparison.text().splitlines()[0] == comparison.note
    with pytest.raises(Exception, match="nothing to compare"):
        compare([])


def test_what_compare_shows_never_holds_a_secret_and_values_are_never_run() -> None:
    from bt_jupyter.magic_args import recorded_options, train_parser
    from bt_jupyter.packaging.capture import shown_value

    assert shown_value("lr", 3e-4) == "0.0003"
    assert shown_value("layers", (2, 4)) == "(2, 4)"
    assert shown_value("hf_token", "abc") is None  # named like a secret
    assert shown_value("x", "hf_abcdefghijklmnop") is None  # looks like a key
    assert shown_value("pair", ("a", "sk-live-123")) is None
    assert shown_value("text", "x" * 100) is None  # too long to read in a table
    assert shown_value("frame", object()) is None
    args = train_parser().parse_args(
        ["--gpu", "H100:1", "--env", "SEED=1", "--env", "API_KEY=abc", "--wait", "--sweep", "a=1"]
    )
    options = dict(recorded_options(args))
    assert options == {"--gpu": "H100:1", "--env": "SEED=1 API_KEY=***"}
    # a sweep value is a literal or a plain string: never evaluated
    assert parse_grid(["x=__import__('os').getcwd(),2"]) == {"x": ["__import__('os').getcwd()", 2]}
