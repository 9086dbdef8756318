"""``client.push`` with a ``Workspace``: the files gathered as ``truss train push``
gathers them (checked against truss's own gathering code), Baseten's rules for excludes
and external folders, and its 5 GB cap (also for ``%%bt_train --include``)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import Client, limits, spec
from bt_jupyter.errors import IncludeError
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging import workspace
from tests.adversarial.checks import assert_one_clear_line, unchanged

truss_deployment = pytest.importorskip("truss_train.deployment")
truss_definitions = pytest.importorskip("truss_train.definitions")


def _tree(root: Path) -> Path:
    """repo/{trainer (pushed), data (big, excluded), utils.py, notes/}, shared_lib/ outside."""
    files = {
        "repo/trainer/train.py": "import sys\nsys.path.insert(0, '.')\nimport shared_lib.helpers\n"
        "import utils\nprint(shared_lib.helpers.NAME, utils.VALUE)\n",
        "repo/trainer/__pycache__/train.cpython-311.pyc": "compiled",
        "repo/utils.py": "VALUE = 7\n",
        "repo/notes/readme.md": "notes\n",
        "repo/data/huge.bin": "x" * 5000,
        "shared_lib/helpers.py": "NAME = 'shared'\n",
        "shared_lib/__init__.py": "",
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root / "repo" / "trainer"


SETTINGS = {
    "workspace_root": "..",
    "external_dirs": ["../../shared_lib"],
    "exclude_dirs": ["../data"],
}


def test_the_files_are_truss_train_push_s(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    ours = sorted(path for path, _ in workspace.gather(source, spec.Workspace(**SETTINGS)))
    gathered = truss_deployment._gather_training_dir(
        source, truss_definitions.Workspace(**SETTINGS)
    )
    from truss.util.path import is_ignored, load_trussignore_patterns_from_truss_dir

    patterns = load_trussignore_patterns_from_truss_dir(gathered)
    with warnings.catch_warnings():  # truss calls a pathspec API that is deprecated now
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = sorted(
            p.relative_to(gathered).as_posix()
            for p in gathered.rglob("*")
            if p.is_file() and not is_ignored(p, patterns, base_dir=gathered)
        )
    shutil.rmtree(gathered.parent)  # truss's temporary folder
    assert ours == theirs
    assert "data/huge.bin" not in ours
    assert "shared_lib/helpers.py" in ours


@pytest.mark.parametrize(
    ("settings", "mentions"),
    [
        ({"exclude_dirs": ["../notes/deeper"], "workspace_root": ".."}, ("not directly under",)),
        ({"exclude_dirs": ["/etc"], "workspace_root": ".."}, ("not inside workspace_root",)),
        ({"workspace_root": "../notes"}, ("must hold the pushed folder",)),
        ({"workspace_root": "..", "external_dirs": ["../../missing"]}, ("does not exist",)),
        ({"workspace_root": "..", "external_dirs": ["../utils.py"]}, ("inside workspace_root",)),
        ({"workspace_root": "..", "external_dirs": ["../../repo/notes"]}, ("inside",)),
    ],
)
def test_a_workspace_baseten_would_refuse_is_one_line(
    tmp_path: Path, settings: dict[str, object], mentions: tuple[str, ...]
) -> None:
    source = _tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an external folder inside the root: a warning
        with pytest.raises((IncludeError, UserWarning)) as refused:
            workspace.gather(source, spec.Workspace(**settings))
    assert_one_clear_line(str(refused.value), *mentions)


def test_an_external_folder_whose_name_is_taken_is_refused(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    (tmp_path / "other" / "notes").mkdir(parents=True)
    with pytest.raises(IncludeError) as refused:
        workspace.gather(
            source, spec.Workspace(workspace_root="..", external_dirs=["../../other/notes"])
        )
    assert_one_clear_line(str(refused.value), "'notes'", "a name of its own")


def test_over_the_cap_names_the_size_and_the_biggest_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_home: Home
) -> None:
    """Baseten's cap is 5 GB; a smaller one here stands for it (no 5 GB file on a CI disk)."""
    monkeypatch.setattr(limits, "MAX_WORKSPACE_BYTES", 4000)
    source = _tree(tmp_path)
    with pytest.raises(IncludeError) as refused:
        workspace.gather(source, spec.Workspace(workspace_root=".."))
    assert_one_clear_line(str(refused.value), "over Baseten's", "biggest: data/", "exclude_dirs")
    # and through push: nothing is created
    project = spec.TrainingProject(
        name=f"ws-cap-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            workspace=spec.Workspace(workspace_root=".."),
        ),
    )
    with unchanged(local_home), Client.local(local_home.root) as bt, pytest.raises(IncludeError):
        bt.push(project, source, entrypoint="true")


@pytest.mark.timeout(120)
def test_a_pushed_workspace_runs_with_its_external_folder(tmp_path: Path, local_home: Home) -> None:
    source = _tree(tmp_path)
    project = spec.TrainingProject(
        name=f"ws-{new_id()}",
        job=spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            workspace=spec.Workspace(**SETTINGS),
        ),
    )
    with Client.local(local_home.root) as bt:
        job = bt.push(project, source, entrypoint="python trainer/train.py")
        assert job.wait(timeout=60).status == spec.TrainingJobStatus.COMPLETED
        assert [line.message for line in job.logs(node=0)] == ["shared 7"]


def test_include_over_the_cap_is_refused_before_anything_is_sent(
    ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_home: Home
) -> None:
    monkeypatch.setattr(limits, "MAX_WORKSPACE_BYTES", 4000)
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path / "repo")
    with unchanged(local_home), pytest.raises(UsageError) as refused:
        ip.run_cell_magic("bt_train", "--include data --include notes", "print(1)\n")
    assert_one_clear_line(str(refused.value), "--include", "biggest: data/")
