"""The wheel works alone: installed into a clean virtualenv with JupyterLab and nothing of
the test environment, its labextension is enabled, every module imports, `%load_ext
bt_jupyter` is silent, and a job's widget renders in a browser. The sdist holds what a
build from it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from tests.browser import ARTIFACTS, jupyterlab, needs_chromium, notebook_page, write_notebook

REPO = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).parent / "uv")
#: What only the test environment has: none is installed with the wheel.
TEST_ONLY = ("pytest", "torch", "truss", "playwright", "moto", "schemathesis")
#: What no module of the package may import (nbclient comes with JupyterLab, but only the
#: demo and the tests run notebooks with it).
NOT_IMPORTED = (*TEST_ONLY, "nbclient")


def _run(*cmd: str | Path) -> str:
    """The command's output (stdout, then stderr: `jupyter labextension list` writes
    there); it must succeed."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


#: What the install's build hook compiled from labextension/ (`make` installed it).
BUILT = ("bt_jupyter/labextension", "bt_jupyter/widgets/static")


def _build(tmp_path_factory: pytest.TempPathFactory, kind: str) -> Path:
    """A ``--wheel`` or ``--sdist`` of a copy of the checkout, with the lock's backend.

    A copy: other tests read the built files meanwhile. With the labextension the install
    built (hooks off): its webpack build takes two minutes of a CI machine's two cores, and
    the install already proved it builds."""
    source = tmp_path_factory.mktemp("source") / "bt_jupyter"
    listed = _run("git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard")
    for name in listed.splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    for built in BUILT:
        assert (REPO / built).is_dir(), f"{built} was not built: run make"
        shutil.copytree(REPO / built, source / built)
    dist = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "HATCH_BUILD_NO_HOOKS": "true"}
    done = subprocess.run(
        [UV, "build", "--quiet", "--no-build-isolation", kind, "--out-dir", str(dist), str(source)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = (p for p in dist.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    return built


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's python: the wheel, JupyterLab and ipykernel, at the lock's versions."""
    wheel = _build(tmp_path_factory, "--wheel")
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    _run(UV, "venv", "--quiet", venv, "--python", sys.executable)
    python = venv / "bin" / "python"
    lock = REPO / "requirements" / "test.txt"
    _run(UV, "pip", "install", "--quiet", "--python", python, wheel, "jupyterlab", "ipykernel",
         "--constraints", lock)  # fmt: skip
    return python


@pytest.mark.timeout(600)
def test_the_wheel_installs_alone_with_its_labextension_enabled(wheel_python: Path) -> None:
    installed = _run(UV, "pip", "freeze", "--python", wheel_python).lower()
    assert not [name for name in TEST_ONLY if f"\n{name}==" in f"\n{installed}"]
    listed = _run(wheel_python.parent / "jupyter", "labextension", "list")
    assert "bt-jupyter v" in listed
    line = next(x for x in listed.splitlines() if "bt-jupyter v" in x)
    assert "enabled" in line, line
    assert "OK" in line, line
    server = _run(wheel_python.parent / "jupyter", "server", "extension", "list")
    assert "bt_jupyter" in server


def test_every_module_of_the_wheel_imports_without_a_test_dependency(wheel_python: Path) -> None:
    out = _run(
        wheel_python, "-W", "error", "-c",
        "import importlib, pkgutil, bt_jupyter\n"
        "names = [m.name for m in pkgutil.walk_packages(bt_jupyter.__path__, 'bt_jupyter.')]\n"
        "for name in names: importlib.import_module(name)\n"
        f"print(len(names), [m for m in {NOT_IMPORTED!r} if m in __import__('sys').modules])",
    )  # fmt: skip
    count, loaded = out.strip().split(" ", 1)
    assert int(count) > 80
    assert loaded.strip() == "[]"


@needs_chromium
@pytest.mark.timeout(600)
def test_a_job_widget_renders_from_the_wheel_in_jupyterlab(
    wheel_python: Path, tmp_path: Path
) -> None:
    home = Home(tmp_path / "home")
    root = tmp_path / "notebooks"
    root.mkdir()
    write_notebook(
        root / "wheel.ipynb",
        "%load_ext bt_jupyter\n%bt_project wheel",
        "%%bt_train --name from-the-wheel\nprint('hello from the wheel', flush=True)",
    )
    try:
        with (
            jupyterlab(home, root, python=str(wheel_python)) as lab,
            notebook_page(lab, "wheel.ipynb") as page,
        ):
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=status]')?.textContent === 'COMPLETED'",
                timeout=300_000,
            )
            page.wait_for_function(
                "() => /hello from the wheel/.test("
                "document.querySelector('[data-testid=logs]').textContent)",
                timeout=30_000,
            )
            page.screenshot(path=str(ARTIFACTS / "wheel-widget.png"), full_page=True)
    finally:
        daemon.stop(home)


def test_the_sdist_holds_what_a_build_needs_and_nothing_of_the_machine(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    sdist = _build(tmp_path_factory, "--sdist")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    needed = {"pyproject.toml", "labextension/package.json", "labextension/yarn.lock",
              "labextension/install.json", "jupyter-config/server-config/bt_jupyter.json",
              "bt_jupyter/__init__.py"}  # fmt: skip
    assert needed <= names, needed - names
    assert not [n for n in names if n.startswith((".venv", "labextension/node_modules"))]
