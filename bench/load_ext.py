"""How long `%load_ext bt_jupyter` and `import bt_jupyter` take, against IPython itself.

Each run is a fresh interpreter, as a notebook kernel is, timed from inside (the
interpreter's own start-up is the same for all and left out): IPython imported and its
shell created, then `%load_ext bt_jupyter`; `import bt_jupyter` alone in another. Runs
alternate; bytecode is written on a warm-up run first (as `pip install` does for a user),
so no run compiles sources. Also prints which heavy modules the extension loaded and
every warning it raised.

    .venv/bin/python bench/load_ext.py [--repeat 15]

Goals (issue 27): load_ext <= 1.5x IPython's import + shell; import bt_jupyter <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import goal

HEAVY = (
    "asyncssh",
    "boto3",
    "botocore",
    "huggingface_hub",
    "uvicorn",
    "fastapi",
    "pydantic",
    "httpx",
    "jupyter_client",
    "cloudpickle",
)

SHELL_THEN_EXTENSION = f"""
import json, sys, time, warnings
warnings.simplefilter("always")
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t1 = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    shell.run_line_magic("load_ext", "bt_jupyter")
t2 = time.perf_counter()
print(json.dumps({{
    "shell": t1 - t0, "load_ext": t2 - t1,
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
    "warnings": [f"{{w.category.__name__}}: {{w.message}}" for w in caught],
}}))
"""

IMPORT_ONLY = """
import json, time
t0 = time.perf_counter()
import bt_jupyter
print(json.dumps({"import": time.perf_counter() - t0}))
"""


def run(code: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    run(SHELL_THEN_EXTENSION)  # warm-up: writes bytecode, fills the OS's file cache
    run(IMPORT_ONLY)
    shells, loads, imports = [], [], []
    last: dict[str, object] = {}
    for _ in range(args.repeat):
        last = run(SHELL_THEN_EXTENSION)
        shells.append(float(last["shell"]))  # type: ignore[arg-type]
        loads.append(float(last["load_ext"]))  # type: ignore[arg-type]
        imports.append(float(run(IMPORT_ONLY)["import"]))  # type: ignore[arg-type]
    shell, load, imported = (statistics.median(x) * 1000 for x in (shells, loads, imports))
    print(f"runs: {args.repeat} of each, alternating; medians")
    print(f"IPython import + shell:  {shell:7.1f} ms")
    print(f"%load_ext bt_jupyter:    {load:7.1f} ms")
    print(f"import bt_jupyter:       {imported:7.1f} ms\n")
    heavy, warned = last["heavy"], last["warnings"]
    goal(
        "%load_ext vs IPython",
        f"{load / shell:.2f}x ({load:.1f} ms)",
        "<= 1.5x",
        load <= 1.5 * shell,
    )
    goal("import bt_jupyter", f"{imported:.1f} ms", "<= 100 ms", imported <= 100)
    goal("heavy modules at %load_ext", str(heavy or "none"), "none", not heavy)
    goal("warnings at %load_ext", str(warned or "none"), "none", not warned)


if __name__ == "__main__":
    main()
