"""%%bt_train and the %bt_* magics in a real IPython shell, against the real local service."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output

from bt_jupyter import Job
from bt_jupyter.client import ApiClient
from bt_jupyter.errors import JobFailed
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.magics import BtMagics


def _magics(ip: InteractiveShell) -> BtMagics:
    found = ip.magics_manager.registry["BtMagics"]
    assert isinstance(found, BtMagics)
    return found


def _cell(ip: InteractiveShell, line: str, body: str) -> tuple[object, CapturedIO]:
    with capture_output() as out:
        result = ip.run_cell(f"%%bt_train {line}\n{body}")
    return result, out


def _job_count(client: ApiClient) -> int:
    return sum(len(client.jobs(p.id)) for p in client.projects())


@pytest.mark.parametrize(
    ("line", "body", "message"),
    [
        ("--gpu H101:8", "x = 1", "unknown accelerator 'H101'; valid: T4, L4, A10G"),
        ("--nodes 0", "x = 1", "Compute.node_count: must be >= 1, got 0"),
        ("--memory 2GB", "x = 1", "'2GB' is not a memory quantity"),
        ("--env NOVALUE", "x = 1", "--env NOVALUE: write it as NAME=VALUE"),
        ("--gpus H100", "x = 1", "%%bt_train: unrecognized arguments: --gpus H100"),
        ("--launcher mpirun", "x = 1", "argument --launcher: invalid choice: 'mpirun'"),
        ("--no-checkpointing --out x", "x = 1", "--out needs checkpointing"),
        ("", "y = handle.read()", "cannot send `handle` (_io.TextIOWrapper)"),
        ("", "y = (", "the cell is not valid Python: line 1"),
        ("--pip 'numpy=2'", "x = 1", "--pip: 'numpy=2' is not a requirement"),
        ("--out never_set", "x = 1", "--out never_set: the cell never assigns never_set, nor"),
        ("--out 1abc", "x = 1", "--out 1abc: not a Python variable name"),
        ("--out class", "x = 1", "--out class: not a Python variable name"),
        ("--out print", "x = 1", "--out print: that is Python's builtin print"),
        ("--out 'x,y'", "x = 1\ndef f():\n    y = 2", "--out y: the cell never assigns y"),
    ],
)
def test_usage_errors_are_one_line_and_submit_nothing(
    ip: InteractiveShell, client: ApiClient, line: str, body: str, message: str
) -> None:
    ip.run_cell("handle = open(__import__('os').devnull)")
    before = _job_count(client)
    try:
        result, out = _cell(ip, line, body)
    finally:
        ip.user_ns["handle"].close()
    assert type(result.error_in_exec).__name__ == "UsageError"  # type: ignore[attr-defined]
    assert message in str(result.error_in_exec)  # type: ignore[attr-defined]
    assert "Traceback" not in out.stdout + out.stderr
    assert _job_count(client) == before
    assert ip.run_cell("1 + 1").result == 2  # the notebook keeps working


def test_dry_run_shows_the_job_and_manifest_and_submits_nothing(
    ip: InteractiveShell, client: ApiClient
) -> None:
    ip.run_cell("lr = 0.01")
    before = _job_count(client)
    result, out = _cell(ip, "--gpu H100:8 --nodes 2 --spot --env SEED=1 --dry-run", "print(lr)")
    assert result.success  # type: ignore[attr-defined]
    assert '"accelerator": "H100"' in out.stdout
    assert '"node_count": 2' in out.stdout
    assert '"availability_model": "spot"' in out.stdout
    assert "python -m bt_jupyter.runtime" in out.stdout
    assert "captured  lr" in out.stdout
    assert out.stdout.rstrip().endswith("dry run: nothing was submitted")
    assert _job_count(client) == before


def test_wait_streams_text_and_binds_outputs(ip: InteractiveShell) -> None:
    ip.run_cell("import numpy as np\ndata = np.arange(5.0)")
    result, out = _cell(
        ip,
        "--name magic-wait --wait --out total,doubled -o run",
        "total = float(data.sum())\ndoubled = [2 * v for v in data.tolist()]\nprint('sum', total)",
    )
    assert result.success, out.stdout + out.stderr  # type: ignore[attr-defined]
    assert ip.user_ns["total"] == 10.0
    assert ip.user_ns["doubled"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    lines = out.stdout.splitlines()
    assert "[node 0] sum 10.0" in lines
    assert lines[-1].startswith("outputs: total, doubled → bound (job ")
    assert "[status] COMPLETED" in lines
    job = ip.user_ns["run"]
    assert isinstance(job, Job)
    assert job.name == "magic-wait"


def test_a_data_file_the_cell_names_reaches_the_job_without_include(
    ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the notebook's folder
    (tmp_path / "data.jsonl").write_text('{"text": "from next to the notebook"}\n')
    result, out = _cell(ip, "--wait", "import json\nprint(json.loads(open('data.jsonl').read()))")
    assert result.success, out.stdout + out.stderr  # type: ignore[attr-defined]
    assert "[node 0] {'text': 'from next to the notebook'}" in out.stdout.splitlines()


WRITES_FILES = """
import json, os
os.makedirs("tiny_model", exist_ok=True)
json.dump({"model_type": "tiny", "hidden": 4}, open("tiny_model/config.json", "w"))
open("results.csv", "w").write("step,loss\\n1,0.5\\n2,0.25\\n")
open("big.bin", "wb").write(bytes(3000))
print("data.jsonl untouched:", open("data.jsonl").read().strip())
"""


def test_files_the_cell_writes_are_kept_listed_and_load_in_the_notebook(
    ip: InteractiveShell, client: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A saved folder, a CSV: kept as the job's files (a data file that came along and was
    only read is not); over the notebook's cap one is left out with a warning."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text('{"text": "hi"}\n')
    monkeypatch.setenv("BT_JUPYTER_FILES_MB", "0.002")  # 2,000 bytes: big.bin stays out
    result, out = _cell(ip, "--wait -o run", WRITES_FILES)
    assert result.success, out.stdout + out.stderr  # type: ignore[attr-defined]
    job = ip.user_ns["run"]
    assert [f.path for f in job.files()] == ["results.csv", "tiny_model/config.json"]
    assert (
        "[bt-warning] not kept, over the 0.002 MB or 10,000 files a job keeps: big.bin"
        in out.stdout
    )
    assert job.checkpoints() == []  # the job's files are not model checkpoints
    table = {f.path: f for f in job.files()}["results.csv"].load()
    assert list(table["loss"]) == [0.5, 0.25]
    folder = job.download_files()
    assert folder == tmp_path / "bt_files" / job.id
    assert json.loads((folder / "tiny_model" / "config.json").read_text())["hidden"] == 4
    monkeypatch.setenv("BT_JUPYTER_FILES_MB", "lots")
    before = _job_count(client)
    result, out = _cell(ip, "--wait", WRITES_FILES)
    error = str(result.error_in_exec)  # type: ignore[attr-defined]
    assert "BT_JUPYTER_FILES_MB='lots' is not a size in MB" in error
    assert _job_count(client) == before


def test_a_terminal_follows_the_job_as_text(ip: InteractiveShell) -> None:
    ip.run_line_magic("config", "BtMagics.follow_in_terminal = True")
    result, out = _cell(ip, "", "print('from the job')")
    assert result.success  # type: ignore[attr-defined]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Job ")
    assert "submitted to project" in lines[0]
    assert "[status] RUNNING" in lines or "[status] DEPLOYING" in lines
    assert "[node 0] from the job" in lines
    assert lines[-1] == "[status] COMPLETED"


def test_a_failing_job_with_wait_raises_job_failed_with_its_traceback(
    ip: InteractiveShell,
) -> None:
    result, out = _cell(ip, "--wait", "x = 1 / 0")
    assert isinstance(result.error_in_exec, JobFailed)  # type: ignore[attr-defined]
    error = str(result.error_in_exec)  # type: ignore[attr-defined]
    assert "FAILED: node 0 exited with code 1: ZeroDivisionError: division by zero" in error
    # the notebook's cell and line (the magic is line 1), not the bundle's file
    assert re.search(r'File "Cell In\[\d+\]", line 2, in <module>', error + out.stdout)
    assert out.stdout.count("[status] FAILED") == 1


def test_line_magics(ip: InteractiveShell, tmp_path: Path) -> None:
    _cell(ip, "-o first", "import time\nprint('started', flush=True)\ntime.sleep(60)")
    job = ip.user_ns["first"]
    with capture_output() as out:
        ip.run_line_magic("bt_jobs", "")
    assert job.id in out.stdout
    assert ip.run_line_magic("bt_job", job.id).id == job.id

    def logs() -> str:
        with capture_output() as captured:
            ip.run_line_magic("bt_logs", f"{job.id} --tail 1 --node 0")
        return captured.stdout

    from tests.helpers import wait_for

    assert wait_for(lambda: "started" in logs(), 30, "the job to log") is True
    assert logs().strip() == "[node 0] started"
    with capture_output() as out:
        ip.run_line_magic("bt_stop", job.id)
    assert f"stopping job {job.id}" in out.stdout
    assert job.wait(timeout=60) is job
    assert job.status.short == "STOPPED"
    with capture_output() as out:
        ip.run_line_magic("bt_checkpoints", job.id)
    assert out.stdout.strip() == "no checkpoints yet"
    with capture_output() as out:
        ip.run_line_magic("bt_export", f"{job.id} {tmp_path / 'export'}")
    assert (tmp_path / "export" / "config.py").is_file()
    assert "truss train push" in out.stdout
    # --entrypoint, as truss train push --entrypoint: it replaces the start commands
    with capture_output():
        ip.run_line_magic(
            "bt_export", f"{job.id} {tmp_path / 'entry'} --entrypoint 'python -m my.train'"
        )
    config = (tmp_path / "entry" / "config.py").read_text()
    assert re.search(r"start_commands=\[\s*'python -m my\.train',\s*\]", config), config
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("bt_export", f"{job.id} {tmp_path / 'bad'} --entrypoint 'a\x00b'")
    assert not (tmp_path / "bad").exists()
    assert "start command" in str(refused.value)


def test_config_never_shows_the_key(ip: InteractiveShell, local_home: Home) -> None:
    with capture_output() as out:
        ip.run_line_magic("bt_config", "")
    assert "backend: local" in out.stdout
    assert "api key: from the local service's key file" in out.stdout
    assert local_home.api_key() not in out.stdout


def test_config_defaults_are_traitlets(ip: InteractiveShell) -> None:
    ip.run_line_magic("config", "BtMagics.default_project = 'configured'")
    assert _magics(ip).default_project == "configured"
    with capture_output() as out:
        ip.run_line_magic("bt_project", "")
    assert out.stdout.strip() == "project: configured"


def test_secret_is_set_with_a_hidden_prompt_and_never_leaks(
    ip: InteractiveShell, local_home: Home, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    canary = f"canary-{new_id(20)}"
    monkeypatch.setattr("getpass.getpass", lambda prompt="": canary)
    with capture_output() as out:
        ip.run_line_magic("bt_secret", "set magic_canary")
    assert canary not in out.stdout
    result, out = _cell(
        ip,
        "--secret magic_canary:TOKEN --wait -o job",
        "import os\nprint('token', os.environ['TOKEN'])\nprint('length', len(os.environ['TOKEN']))",
    )
    assert result.success  # type: ignore[attr-defined]
    assert f"[node 0] length {len(canary)}" in out.stdout
    assert "[node 0] token ***" in out.stdout
    job = ip.user_ns["job"]
    ip.run_line_magic("bt_export", f"{job.id} {tmp_path / 'export'}")
    places = {
        "cell output": out.stdout + out.stderr,
        "bundle": _magics(ip)._submitted[job.id][1].archive.decode("latin-1"),
        "database": local_home.db.read_bytes().decode("latin-1"),
        "export": "".join(
            p.read_bytes().decode("latin-1")
            for p in (tmp_path / "export").rglob("*")
            if p.is_file()
        ),
        "history": "".join(str(c) for c in ip.user_ns.get("In", [])),
    }
    for where, text in places.items():
        assert canary not in text, f"the secret leaked into the {where}"


def test_load_checkpoint_option_fills_the_config(ip: InteractiveShell) -> None:
    for value, expected in [
        ("latest", '"typ": "baseten_latest_checkpoint"'),
        ("abc1234", '"job_id": "abc1234"'),
        ("abc1234:checkpoint-20", '"checkpoint_name": "checkpoint-20"'),
    ]:
        result, out = _cell(ip, f"--load-checkpoint {value} --dry-run", "x = 1")
        assert result.success  # type: ignore[attr-defined]
        assert '"load_checkpoint_config": {\n        "enabled": true' in out.stdout
        assert expected in out.stdout


@pytest.mark.timeout(300)
def test_bt_model_and_bt_deploy(ip: InteractiveShell) -> None:
    result, _ = _cell(
        ip,
        "--wait -o job",
        "from bt_jupyter.runtime import checkpoint_dir\n"
        "(checkpoint_dir() / 'ckpt-1').mkdir()\n"
        "(checkpoint_dir() / 'ckpt-1' / 'scale.txt').write_text('3')",
    )
    assert result.success  # type: ignore[attr-defined]
    job = ip.user_ns["job"]
    with capture_output() as out:
        ip.run_cell(
            "%%bt_model\n"
            "class Model:\n"
            "    def __init__(self, checkpoint_dir):\n"
            "        self.path = checkpoint_dir / 'scale.txt'\n"
            "    def load(self):\n"
            "        self.scale = int(self.path.read_text())\n"
            "    def predict(self, request):\n"
            "        return {'y': self.scale * request['x']}\n"
        )
    assert "model class ready" in out.stdout
    with capture_output() as out:
        deployment = ip.run_line_magic("bt_deploy", f"{job.id} ckpt-1 --model --name scaler")
    assert f"scaler is ACTIVE at {deployment.url}" in out.stdout
    assert deployment.predict({"x": 5}) == {"y": 15}
    deployment.stop()
    with capture_output() as out:
        ip.run_cell(f"%bt_deploy {job.id}")
    assert "ckpt-1 is not a Hugging Face model folder" in out.stderr + out.stdout


def test_team_projects(ip: InteractiveShell, client: ApiClient) -> None:
    result, _ = _cell(ip, "--team research -p team-proj --wait -o job", "x = 1")
    assert result.success  # type: ignore[attr-defined]
    project = client.project(ip.user_ns["job"].project_id)
    assert (project.name, project.team_name) == ("team-proj", "research")


def test_option_lines_expand_notebook_names_as_ipython_does(ip: InteractiveShell) -> None:
    ip.user_ns.update(run=3, lr_name="small")
    result, out = _cell(ip, "--dry-run --name run-{run}-$lr_name", "x = 1")
    assert result.success  # type: ignore[attr-defined]
    assert '"name": "run-3-small"' in out.stdout
    # a line too long to expand (IPython's expansion takes 40 s at 65 KB) is read as is
    result, out = _cell(ip, "--dry-run --name '{run}' --env A=" + "x" * 5000, "x = 1")
    assert result.success  # type: ignore[attr-defined]
    assert '"name": "{run}"' in out.stdout
