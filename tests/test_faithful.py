"""A job that runs here runs on a Baseten node: it carries and installs what it imports,
and the local service gives it only its image, its start commands' installs and its own
environment."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import spec
from bt_jupyter.client import ApiClient
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import DependencyError, PackageOptions, deps, describe, package_cell
from bt_jupyter.packaging.bundle import IN_JOB_SOURCES
from bt_jupyter.packaging.export import export_project
from tests.helpers import (
    INSTALL,
    messages,
    requirements,
    running_service,
    submit,
    wait_for,
    wait_terminal,
)
from tests.node_harness import bare_image, run_like_a_node

S = spec.TrainingJobStatus
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def helpers_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local helper module (not imported yet) that imports another local module,
    which imports yaml: all of it must travel, and yaml must be required."""
    name = f"nb_local_{new_id()}"
    folder = tmp_path / "nb"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        f"import {name}_inner\n\ndef double(x):\n    return {name}_inner.twice(x)\n"
    )
    (folder / f"{name}_inner.py").write_text(
        "import yaml\n\ndef twice(x):\n    return yaml.safe_load(str(2 * x))\n"
    )
    sys.path.insert(0, str(folder))
    yield folder, name
    sys.path.remove(str(folder))
    for module in (name, f"{name}_inner"):
        sys.modules.pop(module, None)


def _run(shell: InteractiveShell, code: str) -> None:
    result = shell.run_cell(code)
    assert result.success, result.error_in_exec or result.error_before_exec


def _pin(dist: str) -> str:
    line = deps.pin(dist)
    assert line is not None
    return line


# --------------------------------------------------------------------------- requirements


def test_requirements_come_from_every_import_the_job_runs(
    shell: InteractiveShell, helpers_dir: tuple[Path, str]
) -> None:
    folder, helper = helpers_dir
    _run(
        shell,
        "def featurize(rows):\n    import numpy as np\n    return np.asarray(rows)\n",
    )
    cell = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import no_such_module_for_types\n"
        "try:\n"
        "    import no_such_optional_module\n"
        "except ImportError:\n"
        "    no_such_optional_module = None\n"
        f"import {helper}\n"
        "import torch\n"
        "import transformers\n"
        "rows = [[1.0]]\n"
        "def inner():\n"
        "    import pandas as pd\n"
        "    return pd.DataFrame(rows)\n"
        f"print(featurize(rows), inner(), {helper}.double(2))\n"
    )
    bundle = package_cell(cell, shell.user_ns, PackageOptions(notebook_dir=folder))
    assert bundle.requirements == [
        _pin("accelerate"),  # transformers' Trainer needs it: a companion
        _pin("cloudpickle"),
        _pin("numpy"),
        _pin("pandas"),
        _pin("PyYAML"),  # reached through two local modules; yaml -> PyYAML
        _pin("torch"),
        _pin("transformers"),
    ]
    assert not any("+" in r for r in bundle.requirements)  # never a local label (+cpu)
    assert bundle.manifest["local_modules"] == sorted([helper, f"{helper}_inner"])
    assert bundle.start_commands == ["python -m bt_jupyter.install", "python -m bt_jupyter.runtime"]
    text = "\n".join(describe(bundle))
    assert "command   python -m bt_jupyter.install" in text
    assert f"requires  {_pin('PyYAML')}" in text


def test_torch_reached_through_a_library_is_the_notebooks_torch(shell: InteractiveShell) -> None:
    """peft and accelerate require torch: left unpinned, the job would get the newest
    torch (another build, other numerics) instead of the notebook's."""
    bundle = package_cell("import peft\n", shell.user_ns, PackageOptions())
    assert _pin("torch") in bundle.requirements
    assert not any(
        r.startswith("torch")
        for r in package_cell("import yaml\n", shell.user_ns, PackageOptions()).requirements
    )


def test_a_module_nothing_provides_is_named_before_sending(shell: InteractiveShell) -> None:
    with pytest.raises(DependencyError, match=r"the cell, line 2: `flash_attn_x` is not instal"):
        package_cell("x = 1\nimport flash_attn_x\n", shell.user_ns, PackageOptions())
    # naming the distribution that provides it is enough
    bundle = package_cell(
        "import flash_attn_x\n", shell.user_ns, PackageOptions(pip=("flash-attn-x==2.0",))
    )
    assert "flash-attn-x==2.0" in bundle.requirements
    with pytest.raises(DependencyError, match=r"`bt_jupyter.jobs` is not available inside a job"):
        package_cell("from bt_jupyter.jobs import Job\n", shell.user_ns, PackageOptions())
    assert package_cell(
        "from bt_jupyter.runtime import log_metrics\n", shell.user_ns, PackageOptions()
    )


def test_pip_on_a_bare_node_installs_without_bytecode_for_every_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiling all of transformers took half of pip's time on a bare node (62 of 127 s
    of the bare-node test below); a job imports a fraction of it, as uv assumes too."""
    from bt_jupyter import install

    monkeypatch.setattr(install.shutil, "which", lambda name: None)  # an image without uv
    command, env = install.installer(["transformers==4.0.0"])
    assert command[1:] == ["-m", "pip", "install", "--no-compile", "transformers==4.0.0"]
    assert env["PIP_NO_INPUT"] == "1"


def test_the_runtime_and_installer_need_only_the_standard_library_and_cloudpickle() -> None:
    allowances = (
        # torch only for --init-distributed, whose session requirements name it
        ("runtime", {"cloudpickle", "torch"}),
        # a session's requirements name ipykernel (bundle.py adds it)
        ("session_kernel", {"ipykernel", "cloudpickle"}),
        ("trackers", {"accelerate", "lightning", "pytorch_lightning"}),  # once the cell has
        ("install", set()),
    )
    for module, allowed in allowances:
        tree = ast.parse((REPO / "bt_jupyter" / f"{module}.py").read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
        }
        ours = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "bt_jupyter"
            for alias in node.names
            if f"{alias.name}.py" not in IN_JOB_SOURCES
        }
        assert not ours, f"bt_jupyter/{module}.py imports a module that does not travel"
        imported.discard("bt_jupyter")  # only the in-job modules, checked above
        outside = {m for m in imported if m not in sys.stdlib_module_names} - {"__future__"}
        assert outside <= allowed, f"bt_jupyter/{module}.py imports {outside - allowed}"
    assert deps.RUNTIME_DISTRIBUTIONS == ("cloudpickle",)


def test_torch_images_and_gpu_checks() -> None:
    python = deps.PYTHON
    known = next((i for i in deps.TORCH_IMAGES.values() if i.python == python), None)
    if known is not None:  # an official image with this Python: torch is the image's own
        image = deps.default_base_image([f"torch=={known.torch}", "numpy==2.0.0"])
        assert image == known.name
        assert deps.check_image(image, [f"torch=={known.torch}"], gpu=True) == [
            f"torch=={known.torch}"
        ]
        # a chosen official image wins over the notebook's pin: no torch reinstall
        assert deps.check_image(image, ["torch==2.13.0"], gpu=True) == [f"torch=={known.torch}"]
    # a torch release with no official image for this Python: slim + PyPI's CUDA torch
    assert deps.default_base_image(["torch==2.13.0"]) == f"python:{python}-slim"
    with pytest.raises(DependencyError, match=r"is a cpu build; drop the local label"):
        deps.check_image(f"python:{python}-slim", ["torch==2.13.0+cpu"], gpu=True)
    with pytest.raises(DependencyError, match=r"--image-python"):
        deps.check_image("nvcr.io/nvidia/pytorch:25.01-py3", [])
    assert deps.check_image("nvcr.io/nvidia/pytorch:25.01-py3", [], declared_python=python) == []
    other = next(i for i in deps.TORCH_IMAGES.values() if i.python != python)
    with pytest.raises(DependencyError, match=rf"runs Python {other.python}, but the cell"):
        deps.check_image(other.name, [])


# --------------------------------------------------------------------------- a bare node


def test_a_packaged_cell_runs_on_a_bare_node_and_so_does_its_export(
    shell: InteractiveShell, helpers_dir: tuple[Path, str], tmp_path: Path
) -> None:
    """numpy, pandas, yaml and transformers imported inside the cell, a captured notebook
    function and a local module: the bundle installs them all on a bare image."""
    folder, helper = helpers_dir
    _run(shell, "def scale(x):\n    import numpy as np\n    return float(np.float64(x) * 3)\n")
    cell = (
        "import numpy as np\n"
        "import pandas as pd\n"
        "import yaml\n"
        "import transformers\n"
        f"import {helper}\n"
        "frame = pd.DataFrame({'x': np.arange(3)})\n"
        "config = transformers.PretrainedConfig(hidden_size=8)\n"
        f"print('sum', int(frame.x.sum()), scale(2), {helper}.double(4), config.hidden_size,"
        " yaml.safe_dump({'ok': 1}).strip())\n"
    )
    bundle = package_cell(cell, shell.user_ns, PackageOptions(notebook_dir=folder))
    project = spec.TrainingProject(
        name="exported",
        job=spec.TrainingJob(
            image=spec.Image(base_image=bundle.base_image),
            runtime=spec.Runtime(start_commands=bundle.start_commands),
        ),
    )
    # The exported project is the bundle's files plus config.py: running it on a bare
    # node runs the bundle too (one install of transformers instead of two).
    exported = tmp_path / "exported"
    export_project(bundle, project, exported)
    written = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert written == {*bundle.files, "config.py"}
    assert "python -m bt_jupyter.install" in (exported / "config.py").read_text()
    run = run_like_a_node(bare_image(tmp_path / "image"), exported, bundle.start_commands)
    assert run.returncode == 0, run.output[-3000:]
    assert "sum 3 6.0 8 8 ok: 1" in run.output
    assert "bt_jupyter install: installing" in run.output


# --------------------------------------------------------------------------- the local service


@pytest.fixture(scope="module")
def leaky_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    """A service started with secrets and paths in its environment, as a notebook's is."""
    home = Home(tmp_path_factory.mktemp("leaky_home"))
    leaks = {
        "HF_TOKEN": "hf_canary_token",
        "WANDB_API_KEY": "wandb_canary",
        "AWS_SECRET_ACCESS_KEY": "aws_canary",
        "BASETEN_API_KEY": "bt_canary",
        "PYTHONPATH": str(REPO),
    }
    with running_service(home, **leaks), ApiClient.local(home.root) as client:
        yield client


ENV_DUMP = """
import json, os, sys
try:
    import numpy
    numpy_here = True
except ImportError:
    numpy_here = False
try:
    import bt_jupyter.jobs
    bt_here = True
except ImportError:
    bt_here = False
print("ENV " + json.dumps({"env": dict(os.environ), "numpy": numpy_here, "bt": bt_here,
      "prefix": sys.prefix, "path": sys.path}))
"""


def test_a_job_sees_only_its_image_and_its_own_environment(leaky_service: ApiClient) -> None:
    project = leaky_service.upsert_project(f"faithful-{new_id()}")
    job = submit(
        leaky_service,
        project,
        ["python dump.py"],
        files={"dump.py": ENV_DUMP},
        runtime=spec.Runtime(environment_variables={"MINE": "1"}),
    )
    done = wait_terminal(leaky_service, job)
    assert done.status == S.COMPLETED, done.error_message
    line = next(m for m in messages(leaky_service, job) if m.startswith("ENV "))
    seen = json.loads(line[4:])
    env = seen["env"]
    for leaked in ("HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "BASETEN_API_KEY"):
        assert leaked not in env
    assert "PYTHONPATH" not in env
    assert not any(k.startswith("BT_JUPYTER") for k in env)
    assert env["MINE"] == "1"
    assert env["BT_TRAINING_JOB_ID"] == job.id
    assert env["HOME"] != str(Path.home())
    assert job.id in env["HOME"]
    assert not seen["numpy"], "the notebook's site-packages leaked into the job"
    assert not seen["bt"], "bt_jupyter leaked into the job"
    assert not any("site-packages" in p and ".venv" in p for p in seen["path"])
    log = "\n".join(messages(leaky_service, job))
    assert "standing in with Python" in log


def test_requirements_are_installed_by_the_start_commands_and_cached(
    leaky_service: ApiClient,
) -> None:
    project = leaky_service.upsert_project(f"faithful-{new_id()}")
    files = {"use.py": "import yaml\nprint('yaml', yaml.__version__)\n", **requirements("PyYAML")}
    first = submit(leaky_service, project, [INSTALL, "python use.py"], files=files)
    assert wait_terminal(leaky_service, first).status == S.COMPLETED
    second = submit(leaky_service, project, [INSTALL, "python use.py"], files=files)
    assert wait_terminal(leaky_service, second).status == S.COMPLETED
    log = messages(leaky_service, second)
    assert any(m.startswith("Requirements: cached layer") for m in log)
    assert any("Requirement already satisfied: PyYAML" in m for m in log)  # pip ran, for real
    # the same script without installing its requirements fails, as on a node
    bare = submit(leaky_service, project, ["python use.py"], files={"use.py": files["use.py"]})
    done = wait_terminal(leaky_service, bare)
    assert done.status == S.FAILED
    assert "No module named 'yaml'" in (done.error_message or "")


def test_an_install_failure_fails_the_job_with_the_installers_words(
    leaky_service: ApiClient, shell: InteractiveShell
) -> None:
    project = leaky_service.upsert_project(f"faithful-{new_id()}")
    bundle = package_cell(
        "print('never')\n", shell.user_ns, PackageOptions(pip=("bt-jupyter-no-such-dist==9.9.9",))
    )
    artifact, _ = leaky_service.upload_artifact(bundle.archive)
    job = leaky_service.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image=bundle.base_image),
            runtime=spec.Runtime(start_commands=bundle.start_commands),
        ),
        [artifact],
    )
    done = wait_terminal(leaky_service, job, timeout=240)
    assert done.status == S.FAILED
    error = done.error_message or ""
    assert "bt_jupyter install: pip failed" in error
    assert "bt-jupyter-no-such-dist" in error
    assert "never" not in messages(leaky_service, job)


def test_memory_over_the_limit_ends_the_job_as_an_oom_kill(leaky_service: ApiClient) -> None:
    project = leaky_service.upsert_project(f"faithful-{new_id()}")
    script = "import time\nblock = bytearray(300 * 1024 * 1024)\ntime.sleep(60)\n"
    job = submit(
        leaky_service,
        project,
        ["python hog.py"],
        files={"hog.py": script},
        compute=spec.Compute(memory="100Mi"),
    )
    done = wait_terminal(leaky_service, job, timeout=60)
    assert done.status == S.FAILED
    assert "node 0 ran out of memory (OOMKilled)" in (done.error_message or "")
    assert "100Mi limit" in (done.error_message or "")


def test_a_full_checkpoint_volume_ends_the_job(leaky_service: ApiClient) -> None:
    project = leaky_service.upsert_project(f"faithful-{new_id()}")
    script = (
        "import os, time\n"
        "path = os.path.join(os.environ['BT_CHECKPOINT_DIR'], 'big', 'weights.bin')\n"
        "os.makedirs(os.path.dirname(path))\n"
        "with open(path, 'wb') as f:\n"
        "    f.truncate(2 * 1024**3)  # sparse: 2 GiB in size, nothing written\n"
        "time.sleep(60)\n"
    )
    job = submit(
        leaky_service,
        project,
        ["python fill.py"],
        files={"fill.py": script},
        runtime=spec.Runtime(
            checkpointing_config=spec.CheckpointingConfig(enabled=True, volume_size_gib=1)
        ),
    )
    done = wait_terminal(leaky_service, job, timeout=60)
    assert done.status == S.FAILED
    assert "filled its 1 GiB checkpoint volume" in (done.error_message or "")


def test_dry_run_shows_the_image_requirements_and_start_commands(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.run_line_magic("load_ext", "bt_jupyter")
    shell.run_cell_magic(
        "bt_train", "--dry-run --gpu H100:1", "import torch\nprint(torch.ones(1))\n"
    )
    out = capsys.readouterr().out
    assert '"python -m bt_jupyter.install"' in out
    assert f"requires  {_pin('torch')}" in out
    assert f"image     {deps.default_base_image([_pin('torch')])}" in out


def test_a_packaged_cell_without_the_baseten_workdir_is_refused(
    shell: InteractiveShell, leaky_service: ApiClient
) -> None:
    from bt_jupyter import Client
    from bt_jupyter.errors import InvalidConfigError

    bundle = package_cell("print(1)\n", shell.user_ns, PackageOptions())
    project = spec.TrainingProject(
        name=f"faithful-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image=bundle.base_image),
            runtime=spec.Runtime(start_commands=bundle.start_commands),
            enable_baseten_workdir=False,
        ),
    )
    client = Client(leaky_service, "local", "test")
    with pytest.raises(InvalidConfigError, match="needs enable_baseten_workdir=True"):
        client.submit(project, bundle)
    assert not any(p.name == project.name for p in leaky_service.projects())


def test_each_node_loads_only_its_own_ranks_checkpoint(leaky_service: ApiClient) -> None:
    """Baseten puts node N's loaded files in $BT_LOAD_CHECKPOINT_DIR/rank-N/, and only
    those: a node that reads another rank's files must fail here as it would there."""
    project = leaky_service.upsert_project(f"faithful-{new_id()}")
    two_nodes = spec.Compute(node_count=2)
    writer = submit(
        leaky_service,
        project,
        [
            'mkdir "$BT_CHECKPOINT_DIR/checkpoint-1"',
            'echo $BT_NODE_RANK > "$BT_CHECKPOINT_DIR/checkpoint-1/w"',
        ],
        compute=two_nodes,
        runtime=spec.Runtime(checkpointing_config=spec.CheckpointingConfig(enabled=True)),
    )
    assert wait_terminal(leaky_service, writer).status == S.COMPLETED
    reader = submit(
        leaky_service,
        project,
        [
            'own="$BT_LOAD_CHECKPOINT_DIR/rank-$BT_NODE_RANK/checkpoint-1/w"',
            'echo "node $BT_NODE_RANK sees $(ls "$BT_LOAD_CHECKPOINT_DIR") $(cat "$own")"',
        ],
        compute=two_nodes,
        runtime=spec.Runtime(
            load_checkpoint_config=spec.LoadCheckpointConfig(
                enabled=True,
                checkpoints=[
                    spec.NamedCheckpoint(checkpoint_name="checkpoint-1", job_id=writer.id)
                ],
            )
        ),
    )
    done = wait_terminal(leaky_service, reader)
    assert done.status == S.COMPLETED, done.error_message
    assert "node 0 sees rank-0 0" in messages(leaky_service, reader, node="0")
    assert "node 1 sees rank-1 1" in messages(leaky_service, reader, node="1")


def test_a_cached_image_layer_whose_python_is_gone_is_rebuilt(tmp_path: Path) -> None:
    from bt_jupyter.local import envs

    stand_in = envs.StandIn.of(f"python:{deps.PYTHON}-slim")
    said: list[str] = []
    layer = envs.image_layer(stand_in, tmp_path, said.append)
    assert any("building its local stand-in" in line for line in said)
    said.clear()
    assert envs.image_layer(stand_in, tmp_path, said.append) == layer
    assert said == []  # cached: nothing built
    python = layer.bin / "python"
    python.unlink()
    python.symlink_to(tmp_path / "no-such-python")  # the interpreter it was made from is gone
    envs.image_layer(stand_in, tmp_path, said.append)
    assert any("building its local stand-in" in line for line in said)
    assert (layer.bin / "python").exists()


def test_jobs_that_need_one_new_layer_at_once_build_it_once(tmp_path: Path) -> None:
    """Two jobs asking for the same requirements on an empty cache: one builds the layer
    (under a lock) while the other waits and reuses it; both run."""
    home = Home(tmp_path / "home")
    with (
        running_service(home, BT_JUPYTER_IMAGE_CACHE=str(tmp_path / "cache")),
        ApiClient.local(home.root) as client,
    ):
        project = client.upsert_project(f"faithful-{new_id()}")
        files = {"use.py": "import tomli_w\nprint('ok', tomli_w.dumps({'a': 1}).strip())\n"}
        files["requirements.txt"] = "tomli-w==1.0.0\n"
        jobs = [submit(client, project, [INSTALL, "python use.py"], files=files) for _ in (1, 2)]
        for job in jobs:
            done = wait_terminal(client, job, timeout=240)
            assert done.status == S.COMPLETED, done.error_message
        logs = [messages(client, job) for job in jobs]
    assert all("ok a = 1" in lines for lines in logs)
    built = [any(m.startswith("Requirements: building layer") for m in lines) for lines in logs]
    reused = [any(m.startswith("Requirements: cached layer") for m in lines) for lines in logs]
    assert sorted(built) == [False, True]
    assert sorted(reused) == [False, True]


def test_a_job_says_what_it_installs_while_it_builds_its_environment(tmp_path: Path) -> None:
    """While DEPLOYING builds its environment, the job's phase (the widget's, the
    sidebar's and %bt_jobs's note) says what is installed and for how long; it is gone
    once the nodes run, and the job's error stays empty."""
    home = Home(tmp_path / "home")
    with (
        running_service(home, BT_JUPYTER_IMAGE_CACHE=str(tmp_path / "cache")),
        ApiClient.local(home.root) as client,
    ):
        project = client.upsert_project(f"faithful-{new_id()}")
        files = {"requirements.txt": "tomli-w==1.0.0\n", "use.py": "import tomli_w\n"}
        job = submit(client, project, [INSTALL, "python use.py"], files=files)
        phases: list[str] = []

        def ended() -> bool:
            wire = client.job(project.id, job.id).training_job
            if wire.status == S.DEPLOYING and wire.error_message:
                phases.append(wire.error_message)
            return wire.status.is_terminal

        wait_for(ended, 240, "the job to end", every=0.05)
        done = client.job(project.id, job.id).training_job
    assert done.status == S.COMPLETED
    assert done.error_message is None
    assert phases, "no phase seen while DEPLOYING"
    assert all(p.startswith("building its environment, ") for p in phases), phases
    assert any("installing tomli_w 1.0.0 (1/1)" in p for p in phases), phases
