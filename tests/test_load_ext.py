"""`%load_ext bt_jupyter` is light and silent: it registers the magics and nothing else.

Each check runs in a fresh interpreter (a kernel's first `%load_ext`), with every warning
turned into an error, and asks what got imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: What a notebook that only loads the extension must not pay for (bench/load_ext.py).
NOT_AT_LOAD = (
    "asyncssh",
    "boto3",
    "botocore",
    "huggingface_hub",
    "uvicorn",
    "fastapi",
    "pydantic",
    "httpx",
    "bt_jupyter.jobs",
    "bt_jupyter.local",
)


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # nothing printed: no warning, no log line
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_load_ext_registers_every_magic_and_imports_nothing_heavy() -> None:
    found = _run(
        f"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "bt_jupyter")
magics = shell.magics_manager.magics
print(json.dumps({{
    "loaded": [m for m in {NOT_AT_LOAD!r} if m in sys.modules],
    "cell": sorted(m for m in magics["cell"] if m.startswith("bt_")),
    "line": sorted(m for m in magics["line"] if m.startswith("bt_")),
}}))
"""
    )
    assert found["loaded"] == []
    assert found["cell"] == ["bt_model", "bt_remote", "bt_train"]
    assert {"bt_jobs", "bt_logs", "bt_session", "bt_deploy", "bt_config"} <= set(found["line"])


def test_import_bt_jupyter_loads_its_names_on_first_use() -> None:
    found = _run(
        """
import json, sys
import bt_jupyter
before = [m for m in ("pydantic", "httpx", "bt_jupyter.jobs") if m in sys.modules]
client, status = bt_jupyter.Client, bt_jupyter.TrainingJobStatus
from bt_jupyter import Job, load_hf
try:
    bt_jupyter.NotAName
    missing = "no error"
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({
    "before": before,
    "client": client.__module__, "status": status.__module__, "job": Job.__module__,
    "all_resolve": all(getattr(bt_jupyter, n) is not None for n in bt_jupyter.__all__),
    "dir": sorted(bt_jupyter.__all__) == dir(bt_jupyter),
    "missing": missing,
}))
"""
    )
    assert found["before"] == []
    assert (found["client"], found["status"], found["job"]) == (
        "bt_jupyter.jobs",
        "bt_jupyter.spec",
        "bt_jupyter.jobs",
    )
    assert found["all_resolve"] is True
    assert found["dir"] is True
    assert found["missing"] == "module 'bt_jupyter' has no attribute 'NotAName'"


@pytest.mark.parametrize("module", ["bt_jupyter.remote", "bt_jupyter.local.ssh_proxy"])
def test_modules_that_need_asyncssh_import_it_without_a_warning(module: str) -> None:
    """cryptography 51 warns about DSA when asyncssh is imported (an error under -W
    error): the modules of ours that use it import it silently."""
    found = _run(f"import json, {module}, sys; print(json.dumps('asyncssh' in sys.modules))")
    assert found is True
