"""Cells from a real IPython shell become bundles that the real local service runs."""

from __future__ import annotations

import builtins
import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import api, spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import (
    Bundle,
    CaptureError,
    DependencyError,
    IncludeError,
    PackageOptions,
    describe,
    names_read,
    package_cell,
)
from bt_jupyter.packaging.deps import PYTHON, merge, pin
from bt_jupyter.packaging.export import export_project
from tests.helpers import messages, wait_terminal

S = spec.TrainingJobStatus


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Iterator[Path]:
    """A notebook folder with a helper module, importable as the notebook would."""
    module = f"nb_helpers_{new_id()}"
    (tmp_path / f"{module}.py").write_text(
        "def scale(values, k=2):\n    return [k * v for v in values]\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop(module, None)


def _helper_module(folder: Path) -> str:
    return next(p.stem for p in folder.glob("nb_helpers_*.py"))


def _run(shell: InteractiveShell, code: str) -> None:
    result = shell.run_cell(code)
    assert result.success, result.error_in_exec or result.error_before_exec


def _submit(
    client: ApiClient, project: api.TrainingProjectV1, bundle: Bundle, **runtime: Any
) -> api.TrainingJobV1:
    artifact, _ = client.upload_artifact(bundle.archive)
    compute = runtime.pop("compute", spec.Compute())
    job = spec.TrainingJob(
        image=spec.Image(base_image=bundle.base_image),
        runtime=spec.Runtime(
            start_commands=bundle.start_commands,
            checkpointing_config=spec.CheckpointingConfig(enabled=True),
            **runtime,
        ),
        compute=compute,
    )
    return client.create_job(project.id, job, [artifact])


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("y = x + 1", ["x"]),
        ("x = 1\ny = x + 1", []),
        ("y = y + 1", ["y"]),
        ("total += step", ["total", "step"]),
        ("for i in range(n):\n    acc = i", ["n"]),  # builtins are filtered later
        ("import numpy as np\nz = np.zeros(3)", []),
        ("def f(a):\n    return a * scale\nr = f(data)", ["data", "scale"]),
        ("g = lambda v: v + offset", ["offset"]),
        ("s = [v * w for v in items]", ["items", "w"]),
        ("class M(Base):\n    def go(self):\n        return helper()", ["Base", "helper"]),
    ],
)
def test_names_the_cell_reads(cell: str, expected: list[str]) -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(cell)
    found = [n for n in names_read(python) if n not in dir(builtins) and n != "get_ipython"]
    assert sorted(found) == sorted(expected)


# --------------------------------------------------------------------------- capture


def test_state_travels_the_right_way(shell: InteractiveShell, notebook_dir: Path) -> None:
    helper = _helper_module(notebook_dir)
    _run(
        shell,
        f"""
import numpy as np
import json as j
from {helper} import scale
lr = 0.5
weights = np.arange(4.0)
unused = 'not read'
def loss(x):
    return float(np.sum(weights * x)) * lr
class Model:
    def predict(self, x):
        return scale([loss(x)])
""",
    )
    bundle = package_cell(
        "m = Model()\nout = m.predict(np.ones(4))\nprint(j.dumps(out))",
        shell.user_ns,
        PackageOptions(notebook_dir=notebook_dir),
    )
    captured = {c["name"]: c for c in bundle.manifest["captured"]}
    assert set(captured) == {"Model", "loss", "weights", "lr", "np", "scale", "j"}
    assert captured["Model"]["kind"] == "class"
    assert captured["loss"]["kind"] == "function"
    assert captured["weights"]["kind"] == "value"
    assert captured["weights"]["size"] >= 32
    assert captured["np"]["source"] == "import numpy as np"
    assert captured["j"]["source"] == "import json as j"
    assert captured["scale"]["source"] == f"from {helper} import scale"
    assert bundle.manifest["local_modules"] == [helper]
    assert f"{helper}.py" in bundle.files
    names = [r.split("==")[0] for r in bundle.requirements]
    assert "numpy" in names
    assert "cloudpickle" in names
    assert helper not in names
    assert "json" not in names
    assert "bt_jupyter" not in names
    assert bundle.manifest["python"] == PYTHON
    lines = list(describe(bundle))
    assert lines[0].startswith(f"bundle {bundle.sha256[:12]}")


def _raises(shell: InteractiveShell, setup: str, cell: str, message: str, **opts: Any) -> str:
    _run(shell, setup)
    with pytest.raises(CaptureError) as caught:
        package_cell(cell, shell.user_ns, PackageOptions(**opts))
    text = str(caught.value)
    assert message in text, text
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("f = open(__import__('os').devnull)", "cannot send `f` (_io.TextIOWrapper)"),
        ("import socket\nf = socket.socket()", "cannot send `f` (socket.socket)"),
        ("import threading\nf = threading.Lock()", "cannot send `f` (_thread.lock)"),
        ("import threading\nf = threading.Thread(target=print)", "it is a thread"),
        ("f = (i for i in range(3))", "cannot send `f` (generator)"),
        ("import sqlite3\nf = sqlite3.connect(':memory:')", "it is a database connection"),
        ("class FakeCudaTensor:\n    is_cuda = True\nf = FakeCudaTensor()", "on a CUDA device"),
        ("import threading\nf = {'lock': threading.Lock()}", "pickling failed"),
    ],
)
def test_what_cannot_travel_is_named_before_anything_is_sent(
    shell: InteractiveShell, setup: str, message: str
) -> None:
    try:
        text = _raises(shell, setup, "g = f", message)
        assert text.startswith("cannot send `f`")
    finally:
        close = getattr(shell.user_ns.get("f"), "close", None)
        if callable(close):
            close()  # the open file, socket or connection of the setup


def test_a_value_over_the_size_limit_names_size_and_alternatives(
    shell: InteractiveShell,
) -> None:
    text = _raises(
        shell,
        "import numpy as np\nbig = np.zeros(2_000_000)",
        "s = big.sum()",
        "`big` (numpy.ndarray) is 16.0 MB pickled, over the 1.0 MB limit",
        max_value_bytes=1_000_000,
    )
    assert "$BT_PROJECT_CACHE_DIR" in text
    assert "--include" in text


def test_names_assigned_before_read_are_not_captured(shell: InteractiveShell) -> None:
    _run(shell, "import threading\nlock = threading.Lock()")
    bundle = package_cell("lock = 1\nprint(lock)", shell.user_ns, PackageOptions())
    assert bundle.manifest["captured"] == []


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("x = 1\n%time y = x", "line 2: `%time` is IPython syntax"),
        (
            "!pip install trl\nx = 1",
            "line 1: `!pip` is IPython syntax, which does not run inside a job; "
            "remove it from the cell; for `!pip install`, use --pip",
        ),
    ],
)
def test_ipython_syntax_is_refused_with_the_line(
    shell: InteractiveShell, cell: str, message: str
) -> None:
    with pytest.raises(CaptureError) as caught:
        package_cell(cell, shell.user_ns, PackageOptions())
    assert message in str(caught.value)


def test_invalid_python_is_a_clear_error(shell: InteractiveShell) -> None:
    with pytest.raises(CaptureError, match="the cell is not valid Python: line 2"):
        package_cell("x = 1\ny = (", shell.user_ns, PackageOptions())


# --------------------------------------------------------------------------- deps


def test_explicit_requirements_merge_and_conflicts_are_reported(tmp_path: Path) -> None:
    assert merge(("detected", ["numpy==2.1.0"]), ("--pip", ["numpy>=2", "trl==0.9"])) == [
        "numpy>=2",
        "trl==0.9",
    ]
    with pytest.raises(DependencyError, match=r"conflicting requirements for numpy"):
        merge(("detected", ["numpy==2.1.0"]), ("--pip", ["numpy==1.26"]))
    with pytest.raises(DependencyError, match=r"conflicting requirements for trl"):
        merge(("reqs.txt", ["trl==0.8"]), ("--pip", ["trl==0.9"]))
    with pytest.raises(DependencyError, match="is not a requirement"):
        merge(
            ("--pip", ["numpy=2"]),
        )


def test_requirements_file_and_pip_options(shell: InteractiveShell, tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# training extras\ntrl==0.9.6\n")
    bundle = package_cell(
        "x = 1", shell.user_ns, PackageOptions(requirements_file=reqs, pip=("peft==0.12.0",))
    )
    runtime_pin = pin("cloudpickle")  # what the in-job runtime needs, always
    assert bundle.requirements == [runtime_pin, "peft==0.12.0", "trl==0.9.6"]
    assert bundle.files["requirements.txt"] == f"{runtime_pin}\npeft==0.12.0\ntrl==0.9.6\n".encode()


def test_a_base_image_with_another_python_is_refused(shell: InteractiveShell) -> None:
    other = "3.10" if PYTHON != "3.10" else "3.12"
    with pytest.raises(DependencyError, match=f"runs Python {other}, but the cell's state"):
        package_cell("x = 1", shell.user_ns, PackageOptions(base_image=f"python:{other}-slim"))
    assert package_cell("x = 1", shell.user_ns, PackageOptions()).base_image == (
        f"python:{PYTHON}-slim"
    )


# --------------------------------------------------------------------------- bundle


def test_same_cell_same_state_same_hash(shell: InteractiveShell) -> None:
    _run(shell, "import numpy as np\na = np.arange(1000.0)\ndef f(v):\n    return v * 2")
    first = package_cell("b = f(a)", shell.user_ns, PackageOptions())
    again = package_cell("b = f(a)", shell.user_ns, PackageOptions())
    assert first.sha256 == again.sha256
    assert first.archive == again.archive
    _run(shell, "a[0] = 42.0")
    changed = package_cell("b = f(a)", shell.user_ns, PackageOptions())
    assert changed.sha256 != first.sha256
    with tarfile.open(fileobj=io.BytesIO(first.archive)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]  # the manifest first (read without the rest), then sorted
    assert names == ["bt_bundle/manifest.json", *sorted(n for n in names[1:])]
    assert {(m.mtime, m.mode, m.uid, m.gid) for m in members} == {(0, 0o644, 0, 0)}


def test_include_honours_gitignore_and_skips_what_never_travels(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    for path in [
        "data/train.jsonl",
        "data/notes.md",
        "data/scratch.tmp",
        "data/.git/HEAD",
        "data/__pycache__/x.pyc",
        "data/checkpoints/c1/w.bin",
        "data/checkpoint-10/w.bin",
        "data/env/pyvenv.cfg",
        "data/env/lib/x.py",
        "data/sub/keep.txt",
        "data/sub/cache/big.bin",
    ]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    (data / ".gitignore").write_text("*.tmp\nsub/cache/\n")
    bundle = package_cell(
        "x = 1", shell.user_ns, PackageOptions(include=("data",), notebook_dir=tmp_path)
    )
    included = sorted(f["path"] for f in bundle.manifest["files"])
    assert included == [
        "data/.gitignore",
        "data/notes.md",
        "data/sub/keep.txt",
        "data/train.jsonl",
    ]
    with pytest.raises(IncludeError, match=r"--include missing\.csv: no such file"):
        package_cell(
            "x = 1", shell.user_ns, PackageOptions(include=("missing.csv",), notebook_dir=tmp_path)
        )


def test_export_is_a_truss_train_project_the_real_loader_accepts(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    loader = pytest.importorskip("truss_train.loader")
    _run(shell, "lr = 3e-4")
    bundle = package_cell("print(lr)", shell.user_ns, PackageOptions(outputs=("lr",)))
    project = spec.TrainingProject(
        name="exported",
        job=spec.TrainingJob(
            name="from-notebook",
            image=spec.Image(base_image=bundle.base_image),
            compute=spec.Compute(node_count=2, accelerator="H100:8", availability_model="spot"),
            runtime=spec.Runtime(
                start_commands=bundle.start_commands,
                environment_variables={"HF_TOKEN": spec.SecretReference(name="hf"), "A": "1"},
                checkpointing_config=spec.CheckpointingConfig(enabled=True, volume_size_gib=50),
                cache_config=spec.CacheConfig(enabled=True, enable_legacy_hf_cache=True),
                load_checkpoint_config=spec.LoadCheckpointConfig(
                    enabled=True,
                    checkpoints=[spec.BasetenCheckpoint.from_latest_checkpoint(project_name="x")],
                ),
            ),
        ),
    )
    config = export_project(bundle, project, tmp_path / "export")
    assert (tmp_path / "export" / "bt_bundle" / "cell.py").read_text() == "print(lr)\n"
    assert json.loads((tmp_path / "export" / "bt_bundle" / "manifest.json").read_text())[
        "outputs"
    ] == ["lr"]
    with loader.import_training_project(config) as loaded:
        assert spec.as_training_project(loaded) == project


# --------------------------------------------------------------------------- round trips


def test_round_trip_with_a_notebook_module_class_and_a_local_helper(
    shell: InteractiveShell,
    notebook_dir: Path,
    client: ApiClient,
    project: api.TrainingProjectV1,
) -> None:
    helper = _helper_module(notebook_dir)
    _run(
        shell,
        f"""
import torch
from {helper} import scale
torch.manual_seed(0)
class TinyNet(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.inner = torch.nn.Sequential(
            torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
    def forward(self, x):
        return self.inner(x) * factor
factor = 2.0
net = TinyNet(8)
batch = torch.arange(6.0).reshape(2, 3)
""",
    )
    cell = """
from bt_jupyter.runtime import log_metrics
prediction = net(batch).detach().flatten().tolist()
doubled = scale(prediction)
for step, value in enumerate(doubled):
    log_metrics(step=step, value=value)
print("prediction", prediction)
"""
    bundle = package_cell(
        cell,
        shell.user_ns,
        PackageOptions(outputs=("prediction", "doubled"), notebook_dir=notebook_dir),
    )
    _run(shell, cell)  # what the notebook itself computes
    expected = {"prediction": shell.user_ns["prediction"], "doubled": shell.user_ns["doubled"]}
    job = _submit(client, project, bundle)
    done = wait_terminal(client, job, timeout=120)
    assert done.status == S.COMPLETED, done.error_message
    assert client.outputs(project.id, job.id) == expected
    metrics = client.user_metrics(project.id, job.id)
    assert [(m["step"], m["value"]) for m in metrics] == list(enumerate(expected["doubled"]))
    assert client.checkpoints(project.id, job.id) == []  # outputs are not a checkpoint


def test_tracebacks_point_at_the_cell(
    shell: InteractiveShell, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    _run(shell, "limit = 3")
    cell = (
        "total = 0\nfor i in range(10):\n    total += i\n    if i == limit:\n"
        "        raise ValueError(f'stop at {i}')\n"
    )
    job = _submit(client, project, package_cell(cell, shell.user_ns, PackageOptions()))
    done = wait_terminal(client, job)
    assert done.status == S.FAILED
    assert done.error_message == "node 0 exited with code 1: ValueError: stop at 3"
    out = messages(client, job, node="0")
    assert out[0].startswith("bt_jupyter install: ")  # the first start command
    out = out[1:]
    assert out[0] == "Traceback (most recent call last):"
    assert out[1].endswith('bt_bundle/cell.py", line 5, in <module>')
    assert out[2].strip() == "raise ValueError(f'stop at {i}')"
    assert not any("bt_jupyter/runtime.py" in line for line in out)


def test_resubmitting_an_unchanged_bundle_uploads_nothing(
    shell: InteractiveShell, client: ApiClient
) -> None:
    _run(shell, "import numpy as np\nx = np.ones(10_000)")
    first = package_cell("y = x.sum()", shell.user_ns, PackageOptions())
    _, sent = client.upload_artifact(first.archive)
    assert sent == len(first.archive) > 80_000
    again = package_cell("y = x.sum()", shell.user_ns, PackageOptions())
    assert client.upload_artifact(again.archive)[1] == 0


def test_torchrun_launcher_spans_nodes_and_processes(
    shell: InteractiveShell, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    cell = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank())])
dist.all_reduce(t)
node = os.environ["BT_NODE_RANK"]
print(f"rank {dist.get_rank()} of {dist.get_world_size()} on node {node}: sum {t.item()}")
dist.destroy_process_group()
"""
    bundle = package_cell(
        cell, shell.user_ns, PackageOptions(launcher="torchrun", nproc_per_node=2)
    )
    assert bundle.start_commands == [
        "python -m bt_jupyter.install",
        "python -m bt_jupyter.runtime --launcher torchrun --nproc-per-node 2",
    ]
    assert any(r.startswith("torch==") for r in bundle.requirements)  # torchrun needs it
    job = _submit(client, project, bundle, compute=spec.Compute(node_count=2))
    done = wait_terminal(client, job, timeout=240)
    assert done.status == S.COMPLETED, done.error_message
    lines = sorted(m for m in messages(client, job) if m.startswith("rank "))
    assert lines == [
        "rank 0 of 4 on node 0: sum 6.0",
        "rank 1 of 4 on node 0: sum 6.0",
        "rank 2 of 4 on node 1: sum 6.0",
        "rank 3 of 4 on node 1: sum 6.0",
    ]
