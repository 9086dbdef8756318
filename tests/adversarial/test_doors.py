"""Issue 14 (trust): every door has the lock, the home is private, paths cannot escape.

Deployments answer only with the service's key; the home folder (state.db, secrets.json,
notebook data, checkpoints) is closed to other users, even when it existed 0755 before;
no team, project, job or checkpoint name leads outside its folder; a home or secrets file
that cannot be used is one clear line. The two-user tests run commands as ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell

from bt_jupyter import Client, Deployment, Job, spec
from bt_jupyter.errors import DeployError, HomeError, SecretStoreError, UnsafePathError
from bt_jupyter.local import checkpoints, model_server
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore
from bt_jupyter.local.store import DeploymentRow, Store, new_id
from bt_jupyter.packaging import PackageOptions, package_cell
from tests.adversarial.checks import assert_one_clear_line, assert_refused, unchanged
from tests.helpers import running_service, wait_for

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
needs_nobody = pytest.mark.skipif(
    SETPRIV is None or os.geteuid() != 0,
    reason="running as another user needs root and setpriv (util-linux)",
)
SHARED = stat.S_IRWXG | stat.S_IRWXO
CKPT = "$BT_CHECKPOINT_DIR/c1"

MODEL_CELL = (
    "import pathlib\n"
    "class Model:\n"
    "    def __init__(self, checkpoint_dir):\n"
    "        self.dir = pathlib.Path(checkpoint_dir)\n"
    "    def load(self):\n"
    "        self.value = int((self.dir / 'w.txt').read_text())\n"
    "    def predict(self, request):\n"
    "        return {'answer': self.value + request.get('x', 0)}\n"
)


# ------------------------------------------------------------------------ a shared home


@pytest.fixture(scope="module")
def open_parent() -> Iterator[Path]:
    """A world-traversable folder under /tmp: only the home's own mode can protect it."""
    parent = Path(tempfile.mkdtemp(prefix="bt-doors-", dir="/tmp"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def home(open_parent: Path) -> Iterator[Home]:
    """An existing 0755 home holding a job's 0644 notebook data (as older versions left
    it), with a running service on it."""
    root = open_parent / "home"
    old = root / "jobs" / "oldjob" / "work" / "bt_bundle"
    old.mkdir(parents=True)
    (old / "namespace.pkl").write_text("an older version's notebook data")
    for path in (root, root / "jobs", root / "jobs" / "oldjob", old.parent, old):
        path.chmod(0o755)
    (old / "namespace.pkl").chmod(0o644)
    found = Home(root)
    with running_service(found):
        yield found


@pytest.fixture(scope="module")
def bt(home: Home) -> Iterator[Client]:
    with Client.local(home.root) as client:
        yield client


@pytest.fixture(scope="module")
def trained(bt: Client, home: Home) -> Job:
    """A job that carried notebook data (namespace.pkl) and wrote checkpoint c1."""
    cell = package_cell("print(sum(data))\n", {"data": [1, 2, 3]}, PackageOptions())
    artifact = bt.api.upload_artifact(cell.archive)[0]
    project = bt.api.upsert_project(f"doors-{new_id()}")
    job = bt.api.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(
                start_commands=[
                    "mkdir -p $BT_CHECKPOINT_DIR/c1 && echo 41 > $BT_CHECKPOINT_DIR/c1/w.txt"
                ],
                checkpointing_config=spec.CheckpointingConfig(enabled=True),
            ),
        ),
        [artifact],
    )
    return Job(bt, job).wait(timeout=120)


@pytest.fixture(scope="module")
def deployment(trained: Job) -> Iterator[Deployment]:
    """A %%bt_model deployment of checkpoint c1, serving."""
    shell = InteractiveShell.instance()
    model = package_cell(MODEL_CELL, shell.user_ns, PackageOptions())
    served = trained.deploy("c1", model=model).wait(timeout=60)
    yield served
    served.stop()


def _secret_file(home: Home) -> Path:
    SecretStore(home).set("doors_secret", "doors-canary-value")
    return home.secrets_file


def _private_files(home: Home, trained: Job) -> dict[str, Path]:
    """What another user must not read, by what it is."""
    job_dir = home.job_dir(trained.id)
    (namespace,) = job_dir.rglob("namespace.pkl")
    return {
        "state.db": home.db,
        "secrets.json": _secret_file(home),
        "api_key": home.api_key_file,
        "namespace.pkl": namespace,
        "checkpoint": job_dir / "checkpoints" / "rank-0" / "c1" / "w.txt",
        "older job's data": home.job_dir("oldjob") / "work" / "bt_bundle" / "namespace.pkl",
    }


# ------------------------------------------------------------------ deployments: the lock


KEYLESS = {
    "no header": {},
    "wrong bearer": {"Authorization": "Bearer not-the-key"},
    "wrong api-key": {"Authorization": "Api-Key not-the-key"},
    "bare bearer": {"Authorization": "Bearer"},
    "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    "key without scheme": {"Authorization": "KEY"},
    "key with a suffix": {"Authorization": "Bearer KEYx"},
    "key in another header": {"X-Api-Key": "KEY"},
}


@pytest.mark.parametrize("headers", KEYLESS.values(), ids=KEYLESS.keys())
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/predict"), ("GET", "/health"), ("GET", "/openapi.json")],
    ids=["predict", "health", "openapi"],
)
def test_a_deployment_refuses_a_request_without_the_key(
    deployment: Deployment, home: Home, headers: dict[str, str], method: str, path: str
) -> None:
    key = home.api_key()
    sent = {k: v.replace("KEY", key) for k, v in headers.items()}
    answer = httpx.request(method, f"{deployment.url}{path}", json={"x": 1}, headers=sent)
    assert_refused(answer, "api key", str(home.api_key_file), status=401)
    assert key not in answer.text


@pytest.mark.parametrize("scheme", ["Bearer", "Api-Key", "api-key"])
def test_a_deployment_answers_with_the_key(deployment: Deployment, home: Home, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {home.api_key()}"}
    answer = httpx.post(f"{deployment.url}/predict", json={"x": 1}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"answer": 42}


def test_the_client_sends_the_key(deployment: Deployment) -> None:
    assert deployment.predict({"x": 2}) == {"answer": 43}


@pytest.mark.parametrize("body", [b"not json", b"{", b"[" * 100_000], ids=["text", "cut", "deep"])
def test_a_bad_body_is_a_400_not_a_500(deployment: Deployment, home: Home, body: bytes) -> None:
    headers = {"Authorization": f"Api-Key {home.api_key()}", "Content-Type": "application/json"}
    answer = httpx.post(f"{deployment.url}/predict", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert_one_clear_line(answer.json()["error"]["message"], "JSON")


def test_the_widget_tries_a_deployment_without_the_key_in_its_state(
    deployment: Deployment, trained: Job, home: Home
) -> None:
    from bt_jupyter.widgets.job import JobWidget

    widget = JobWidget(trained)
    sent: list[dict[str, object]] = []
    widget.send = sent.append
    widget.live[deployment.id] = deployment
    widget._on_message(widget, {"type": "try", "id": deployment.id, "input": '{"x": 3}'}, [])
    answer = wait_for(lambda: [m for m in sent if m["type"] == "try_result"], 30, "an answer")
    assert answer[0]["text"] == '{"answer": 44}'
    assert home.api_key() not in repr(widget.get_state()) + repr(sent)
    if widget.watcher is not None:
        widget.watcher.close()


@pytest.mark.parametrize("port", [80, 0, -1, 65536, 99999, True], ids=str)
def test_a_port_no_deployment_can_use_is_one_line(trained: Job, home: Home, port: int) -> None:
    with unchanged(home), pytest.raises(DeployError) as refused:
        trained.deploy("c1", port=port)
    assert_one_clear_line(str(refused.value), "port", "1024", "65535")


# --------------------------------------------------------------------- a private home


def test_an_existing_open_home_is_made_private(home: Home, trained: Job) -> None:
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    for name in ("state.db", "secrets.json", "api_key", "older job's data"):
        path = _private_files(home, trained)[name]
        assert not path.stat().st_mode & SHARED, f"{name} is {oct(path.stat().st_mode)}"
    for folder in (home.root / "jobs", home.artifacts):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.parametrize("what", ["namespace.pkl", "checkpoint"])
def test_what_a_job_writes_is_private(home: Home, trained: Job, what: str) -> None:
    """0600 itself, not only closed by the 0700 folders above it: the runner unpacks
    with ``home.private_member`` and the service runs everything with umask 077."""
    path = _private_files(home, trained)[what]
    assert not path.stat().st_mode & SHARED, f"{what} is {oct(path.stat().st_mode)}"


@pytest.mark.parametrize(
    "name", ["state.db", "state.db-wal", "state.db-shm", "api_key", "service.json", "jobs"]
)
def test_a_fresh_home_keeps_every_file_private(home: Home, name: str) -> None:
    path = home.root / name
    assert path.exists(), f"{name} was not made"
    assert not path.stat().st_mode & SHARED, f"{name} is {oct(path.stat().st_mode)}"


def test_tightening_keeps_what_the_owner_may_do(tmp_path: Path) -> None:
    root = tmp_path / "old"
    (root / "jobs" / "j1").mkdir(parents=True)
    tool = root / "jobs" / "j1" / "run.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    root.chmod(0o755)
    Home(root).ensure()
    assert stat.S_IMODE(tool.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "jobs" / "j1").stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_home_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "theirs"
    root.mkdir(mode=0o755)
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(HomeError) as refused:
        Home(root).ensure()
    assert_one_clear_line(str(refused.value), str(root), "not to you", "BT_JUPYTER_HOME")
    assert list(root.iterdir()) == []  # nothing was made in it


def test_a_home_whose_file_system_ignores_modes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "vfat"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    monkeypatch.setattr(os, "chmod", lambda *_, **__: None)  # as vfat or 9p answer
    with pytest.raises(HomeError) as refused:
        Home(root).ensure()
    assert_one_clear_line(str(refused.value), str(root), "cannot be made private")


UNUSABLE = {
    "under a device": "/dev/null/x",
    "under a file": "/etc/hostname/bt",
    "in /proc": "/proc/bt_jupyter_home",
}


@pytest.mark.parametrize("root", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_an_unusable_home_is_one_line_from_the_python_api(root: str) -> None:
    with pytest.raises(HomeError) as refused:
        Client.local(Path(root))
    assert_one_clear_line(str(refused.value), root, "BT_JUPYTER_HOME")


@pytest.mark.parametrize(
    "command", [["secrets", "list"], ["secrets", "set", "x"], ["local", "start"]], ids=" ".join
)
def test_an_unusable_home_is_one_line_from_the_cli(command: list[str]) -> None:
    env = {**os.environ, "BT_JUPYTER_HOME": "/dev/null/x"}
    done = subprocess.run(
        [sys.executable, "-m", "bt_jupyter.cli", *command],
        env=env, input="v", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert_one_clear_line(done.stderr, "/dev/null", "BT_JUPYTER_HOME")


# ---------------------------------------------------------------- a corrupted secrets file

CORRUPT = {
    "empty object cut": b"{",
    "text": b"not json at all",
    "a list": b'["a", "b"]',
    "a number value": b'{"a": 1}',
    "binary": b"\x00\xff\xfe",
    "a string": b'"secret"',
}


@pytest.fixture
def corrupt_home(tmp_path: Path, request: pytest.FixtureRequest) -> Home:
    home = Home(tmp_path / "h").ensure()
    home.secrets_file.write_bytes(request.param)
    return home


@pytest.mark.parametrize("corrupt_home", CORRUPT.values(), ids=CORRUPT.keys(), indirect=True)
def test_a_corrupted_secrets_file_is_one_line_naming_it(corrupt_home: Home) -> None:
    before = corrupt_home.secrets_file.read_bytes()
    for attempt in (
        lambda: SecretStore(corrupt_home).names(),
        lambda: SecretStore(corrupt_home).set("new", "value"),
    ):
        with pytest.raises(SecretStoreError) as refused:
            attempt()
        assert_one_clear_line(str(refused.value), str(corrupt_home.secrets_file), "secrets set")
    assert corrupt_home.secrets_file.read_bytes() == before  # the other secrets survive


@pytest.mark.parametrize("action", [["list"], ["set", "new"], ["delete", "a"]], ids=" ".join)
def test_a_corrupted_secrets_file_is_one_line_in_the_cli(tmp_path: Path, action: list[str]) -> None:
    home = Home(tmp_path / "h").ensure()
    home.secrets_file.write_text("{not json")
    env = {**os.environ, "BT_JUPYTER_HOME": str(home.root)}
    done = subprocess.run(
        [sys.executable, "-m", "bt_jupyter.cli", "secrets", *action],
        env=env, input="v", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert_one_clear_line(done.stderr, str(home.secrets_file), "not valid JSON")
    assert home.secrets_file.read_text() == "{not json"


# ------------------------------------------------------------------- paths cannot escape

ESCAPES = {
    "parent chain": "../../../../tmp/x",
    "parent": "..",
    "dot": ".",
    "absolute": "/etc",
    "nested": "a/b",
    "NUL": "x\x00y",
    "newline": "x\ny",
    "empty": "",
    "too long": "a" * 300,
}
PLACES = {
    "team cache": lambda h, n: h.team_cache(n or "x/.."),  # None and "" mean the default
    "project cache": lambda h, n: h.project_cache(n),
    "job dir": lambda h, n: h.job_dir(n),
    "deployment dir": lambda h, n: h.deployment_dir(n),
}


@pytest.mark.parametrize("name", ESCAPES.values(), ids=ESCAPES.keys())
@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
def test_a_name_cannot_lead_out_of_the_home(tmp_path: Path, place: object, name: str) -> None:
    home = Home(tmp_path / "h").ensure()
    with pytest.raises(UnsafePathError) as refused:
        place(home, name)  # type: ignore[operator]
    assert_one_clear_line(str(refused.value))


@pytest.mark.parametrize("name", ["default", "my team", "team.v2", "Équipe", "a" * 200])
def test_a_plain_team_name_is_a_folder_in_the_home(tmp_path: Path, name: str) -> None:
    home = Home(tmp_path / "h").ensure()
    assert home.team_cache(name).parent == home.root / "cache" / "teams"


def test_a_planted_symlink_cannot_lead_out(tmp_path: Path) -> None:
    home = Home(tmp_path / "h").ensure()
    (home.root / "cache" / "teams").mkdir(parents=True)
    (home.root / "cache" / "teams" / "evil").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="leads outside"):
        home.team_cache("evil")


@pytest.mark.parametrize("name", ["../../../..", "../j2/c1", "/etc", "c1/../../x"])
def test_a_checkpoint_name_cannot_lead_out(tmp_path: Path, name: str) -> None:
    home = Home(tmp_path / "h").ensure()
    source = home.job_dir("j1") / "checkpoints"
    (source / "rank-0" / "c1").mkdir(parents=True)
    target = home.job_dir("j2") / "loaded"
    with pytest.raises(UnsafePathError):
        checkpoints.place(source, name, target)
    assert not target.exists()
    row = DeploymentRow(
        id="d1", name="d", job_id="j1", checkpoint=name, kind="model", status="DEPLOYING",
        port=0, pid=None, error_message=None, created_at=0.0, updated_at=0.0,
    )  # fmt: skip
    with pytest.raises(UnsafePathError):
        model_server.checkpoint_path(home, row)


def test_a_stored_team_name_leading_out_never_makes_a_folder_there(
    bt: Client, home: Home, open_parent: Path
) -> None:
    """The path layer refuses on its own: the team name is stored as an older service
    (before names were checked at the API) could have stored it."""
    outside = open_parent / f"escape-{new_id()}"
    project = bt.api.upsert_project(f"doors-team-{new_id()}")
    with Store(home.db)._tx() as db:
        team = "../" * 30 + str(outside).lstrip("/")
        db.execute("UPDATE projects SET team_name = ? WHERE id = ?", (team, project.id))
    job = bt.api.create_job(
        project.id,
        spec.TrainingJob(
            image=spec.Image(base_image="python:3.11-slim"),
            runtime=spec.Runtime(
                start_commands=["touch $BT_TEAM_CACHE_DIR/pwned"],
                cache_config=spec.CacheConfig(enabled=True),
            ),
        ),
    )
    ended = Job(bt, job)
    wait_for(lambda: ended.refresh().status.is_terminal, 60, "the job to end")
    assert not outside.exists()
    assert ended.error_message is not None
    assert_one_clear_line(ended.error_message, "team name", "cannot contain '/'")


# ------------------------------------------------------------ two users on one machine


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AS_NOBODY, *argv], capture_output=True, text=True, timeout=30)


@needs_nobody
def test_nobody_can_traverse_to_the_home(home: Home, open_parent: Path) -> None:
    """The control: only the home's own mode stands between nobody and its files."""
    assert _as_nobody("ls", str(open_parent)).returncode == 0
    listing = _as_nobody("ls", str(home.root))
    assert listing.returncode != 0
    assert "Permission denied" in listing.stderr


@needs_nobody
@pytest.mark.parametrize(
    "what",
    ["state.db", "secrets.json", "api_key", "namespace.pkl", "checkpoint", "older job's data"],
)
def test_nobody_cannot_read_a_private_file(home: Home, trained: Job, what: str) -> None:
    path = _private_files(home, trained)[what]
    assert path.is_file()
    read = _as_nobody("cat", str(path))
    assert read.returncode != 0, f"nobody read {what}: {read.stdout[:80]!r}"
    assert "Permission denied" in read.stderr


@needs_nobody
@pytest.mark.parametrize(
    "extra", [[], ["-H", "Authorization: Bearer guess"]], ids=["no key", "a guessed key"]
)
def test_nobody_gets_401_from_a_deployment(deployment: Deployment, extra: list[str]) -> None:
    call = _as_nobody(
        "curl", "-s", "-w", "\\n%{http_code}", "-X", "POST", "-d", '{"x": 1}', *extra,
        f"{deployment.url}/predict",
    )  # fmt: skip
    body, _, code = call.stdout.rpartition("\n")
    assert code == "401", call.stdout
    assert "answer" not in body
