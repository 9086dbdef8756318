"""Requirements layers share their packages through the machine's store: a package is
installed once per (Python, wheel) and linked into every layer that needs it; layers and
store entries are read-only; what the store cannot install the same way pip installs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bt_jupyter.local import envs, image_cache, package_store

STAND_IN = envs.StandIn.of("python:3.11-slim")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(scope="module")
def image(cache: Path) -> envs.Layer:
    return envs.image_layer(STAND_IN, cache, lambda _: None)


def _layer(image: envs.Layer, cache: Path, requirements: str) -> tuple[envs.Layer, list[str]]:
    said: list[str] = []
    layer = envs.requirements_layer(image, STAND_IN, requirements, cache, said.append)
    assert layer is not None, said
    return layer, said


def _run_in(layer: envs.Layer, image: envs.Layer, cache: Path, code: str) -> str:
    node = envs.node_env(cache / "node", image, [layer])
    done = subprocess.run(
        [str(node.bin / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_second_set_links_what_the_first_installed(image: envs.Layer, cache: Path) -> None:
    first, said_first = _layer(image, cache, "tomli-w==1.0.0\n")
    assert any("1 to install" in line for line in said_first), said_first
    second, said = _layer(image, cache, "tomli-w==1.0.0\nPyYAML==6.0.2\n")
    assert any("1 already on this machine, 1 to install" in line for line in said), said
    assert not [line for line in said if "installing tomli" in line.lower()]
    site = Path("tomli_w") / "_writer.py"
    assert (first.site / site).stat().st_ino == (second.site / site).stat().st_ino
    code = "import tomli_w, yaml; print(tomli_w.dumps({'a': 1}).strip(), yaml.__version__)"
    assert _run_in(second, image, cache, code) == "a = 1 6.0.2"
    # what the job's own install then finds: everything satisfied, in the layer
    node = envs.node_env(cache / "node", image, [second])
    pip = subprocess.run(
        [str(node.bin / "python"), "-m", "pip", "install", "tomli-w==1.0.0", "PyYAML==6.0.2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    assert pip.stdout.count("Requirement already satisfied") == 2


def test_layers_and_store_entries_are_read_only_and_compiled(
    image: envs.Layer, cache: Path
) -> None:
    layer, _ = _layer(image, cache, "tomli-w==1.0.0\n")
    writable = [p for p in layer.root.rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o222]
    assert writable == []
    assert list((layer.site / "tomli_w" / "__pycache__").glob("*.cpython-311.pyc"))


def test_a_script_runs_with_its_layers_python(image: envs.Layer, cache: Path) -> None:
    layer, _ = _layer(image, cache, "wheel==0.45.1\n")
    script = layer.bin / "wheel"
    assert script.read_text().splitlines()[0] == f"#!{layer.bin / 'python'}"
    done = subprocess.run([str(script), "version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "0.45.1" in done.stdout


def test_what_is_not_a_wheel_file_is_left_to_pip(
    image: envs.Layer, cache: Path, tmp_path: Path
) -> None:
    project = tmp_path / "localpkg"
    (project / "localpkg").mkdir(parents=True)
    (project / "localpkg" / "__init__.py").write_text("VALUE = 7\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "localpkg"\nversion = "1.0"\n'
    )
    layer, said = _layer(image, cache, f"localpkg @ {project.as_uri()}\n")
    assert not [line for line in said if "from the store" in line], said
    assert _run_in(layer, image, cache, "import localpkg; print(localpkg.VALUE)") == "7"


def test_an_interrupted_store_entry_is_built_again(image: envs.Layer, cache: Path) -> None:
    _layer(image, cache, "tomli-w==1.0.0\n")
    store = next((cache / "store").iterdir())
    entry = next(store.glob("tomli_w-1.0.0-*"))
    half = entry.with_name(f"{entry.name}.building")
    package_store.remove_tree(entry)
    (half / "tomli_w").mkdir(parents=True)  # what a killed build left
    layer, said = _layer(image, cache, "tomli-w==1.0.0\nPyYAML==6.0.2\n# again\n")
    assert any("installing tomli_w" in line for line in said), said
    assert (entry / ".ready").exists()
    assert not half.exists()
    assert _run_in(layer, image, cache, "import tomli_w; print('ok')") == "ok"


def test_the_cache_lists_and_prunes_what_no_job_used_lately(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    image = envs.image_layer(STAND_IN, cache, lambda _: None)
    old, _ = _layer(image, cache, "tomli-w==1.0.0\n")
    kept, _ = _layer(image, cache, "PyYAML==6.0.2\n")
    month_ago = time.time() - 30 * image_cache.DAY_S
    os.utime(old.root.parent / f"{old.root.name}.lock", (month_ago, month_ago))
    listed = {(e.kind, e.what) for e in image_cache.entries(cache)}
    assert {("layer", "tomli-w==1.0.0"), ("layer", "PyYAML==6.0.2")} <= listed
    assert {("package", "tomli_w==1.0.0"), ("package", "PyYAML==6.0.2")} <= listed

    cli = subprocess.run(
        [sys.executable, "-m", "bt_jupyter.cli", "local", "cache", "prune"],
        env={**os.environ, "BT_JUPYTER_IMAGE_CACHE": str(cache)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"removed layer {old.root.name} (tomli-w==1.0.0)" in cli.stdout
    assert "removed package tomli_w-1.0.0-" in cli.stdout
    assert "yaml" not in cli.stdout.lower()
    assert not old.root.exists()
    store = {p.name.split("-")[0] for p in (cache / "store").glob("*/*") if p.is_dir()}
    assert store == {"pyyaml"}
    assert _run_in(kept, image, cache, "import yaml; print(yaml.__version__)") == "6.0.2"
    # what the next job needing the pruned set does: builds it again
    again, said = _layer(image, cache, "tomli-w==1.0.0\n")
    assert any("installing tomli_w" in line for line in said), said
    assert _run_in(again, image, cache, "import tomli_w; print('back')") == "back"
