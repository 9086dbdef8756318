"""Files the cell names travel with it: a tutorial's data file next to the notebook is sent
without ``--include``, said in ``--dry-run``; one over the cap stays behind, named before
anything is submitted; nothing outside the notebook's folder is ever picked up."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter.packaging import PackageOptions, describe, package_cell
from bt_jupyter.packaging.named_files import MAX_MB_ENV


@pytest.fixture
def shell() -> InteractiveShell:
    return InteractiveShell.instance()


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    (folder / "tiny-model").mkdir(parents=True)
    (folder / "capybara.jsonl").write_text('{"text": "hi"}\n')
    (folder / "tiny-model" / "config.json").write_text("{}")
    (folder / "tiny-model" / "weights.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "secret.txt").write_text("not next to the notebook")
    return folder


def _files(bundle_manifest: dict[str, object]) -> list[str]:
    return sorted(f["path"] for f in bundle_manifest["files"])  # type: ignore[attr-defined, index]


def test_a_data_file_and_a_model_folder_the_cell_names_travel(
    shell: InteractiveShell, notebook_dir: Path
) -> None:
    cell = (
        "from datasets import load_dataset\n"
        "rows = load_dataset('json', data_files='capybara.jsonl')\n"
        "path = './tiny-model'\n"
    )
    bundle = package_cell(cell, shell.user_ns, PackageOptions(notebook_dir=notebook_dir))
    files = _files(bundle.manifest)
    assert "capybara.jsonl" in files
    assert "tiny-model/config.json" in files
    assert "tiny-model/weights.bin" in files
    shown = list(describe(bundle))
    assert any(
        line.startswith("file      capybara.jsonl") and "included because line 2 names it" in line
        for line in shown
    ), shown
    assert any("tiny-model/weights.bin" in x and "line 3 names it" in x for x in shown), shown


def test_a_notebook_function_the_cell_calls_names_its_file(
    shell: InteractiveShell, notebook_dir: Path
) -> None:
    shell.run_cell("def rows():\n    return open('capybara.jsonl').read()")
    bundle = package_cell("data = rows()", shell.user_ns, PackageOptions(notebook_dir=notebook_dir))
    assert "capybara.jsonl" in _files(bundle.manifest)
    assert any("notebook function rows names it" in line for line in describe(bundle))


def test_nothing_outside_the_notebooks_folder_or_hidden_travels(
    shell: InteractiveShell, notebook_dir: Path
) -> None:
    (notebook_dir / ".env").write_text("HF_TOKEN=hf_secret")
    cell = (
        "a = open('../secret.txt')\n"
        f"b = open({str(notebook_dir.parent / 'secret.txt')!r})\n"
        "c = open('.env')\n"
        "d = 'https://example.com/capybara.jsonl'\n"
        "e = '.'\n"
        "f = 'capybara.jsonl\\x00'\n"
    )
    bundle = package_cell(cell, shell.user_ns, PackageOptions(notebook_dir=notebook_dir))
    files = _files(bundle.manifest)
    assert not [f for f in files if "secret" in f or f == ".env"], files
    assert "capybara.jsonl" not in files


def test_a_file_over_the_cap_stays_behind_and_says_where_to_put_it(
    shell: InteractiveShell, notebook_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_MB_ENV, "0.0005")  # 500 bytes: the model folder is 1 KB
    cell = "rows = open('capybara.jsonl')\nmodel = './tiny-model'"
    bundle = package_cell(cell, shell.user_ns, PackageOptions(notebook_dir=notebook_dir))
    files = _files(bundle.manifest)
    assert "capybara.jsonl" in files
    assert not [f for f in files if f.startswith("tiny-model")]
    (advice,) = bundle.manifest["not_sent"]
    assert advice.startswith("not sent: tiny-model (0.0 MB; line 2 names it)")
    assert "--include tiny-model" in advice
    assert "--cache" in advice
    assert "--weights" in advice
    assert advice in list(describe(bundle))
