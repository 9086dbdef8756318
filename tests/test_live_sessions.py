"""Live sessions on the local service: %bt_session, %%bt_remote, %bt_push / %bt_pull.

Every connection goes the way it goes on Baseten: ssh/sign, TLS to the SSH proxy, the
JWT, SSH with the signed certificate, the node's kernel file read over SSH and its ports
forwarded (the proxy here is the service's stand-in, see local/ssh_proxy.py).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from bt_jupyter import remote, spec
from bt_jupyter.errors import RemoteCellError
from bt_jupyter.jobs import Client
from bt_jupyter.local.home import Home
from bt_jupyter.local.store import new_id
from bt_jupyter.packaging.bundle import PackageOptions, SessionMode, package_cell
from bt_jupyter.remote import kernel as remote_kernel
from bt_jupyter.remote import session as remote_session
from bt_jupyter.remote.session import TRANSPORT_ENV
from bt_jupyter.session_kernel import connection_file
from tests.conftest import magics_on
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", autouse=True)
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user's SSH key in a folder of the test's own (never ~/.ssh), and the kernels'
    ports forwarded through SSH as on Baseten (the notebook and browser tests take the
    local service's direct path)."""
    folder = tmp_path_factory.mktemp("baseten_ssh")
    wanted = {"BASETEN_SSH_DIR": str(folder), TRANSPORT_ENV: "ssh"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    yield folder
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _project(name: str, nodes: int = 1) -> spec.TrainingProject:
    return spec.TrainingProject(
        name=name,
        job=spec.TrainingJob(
            image=spec.Image(base_image="pending"),
            compute=spec.Compute(node_count=nodes),
            runtime=spec.Runtime(),
        ),
    )


def start_session(
    home: Home,
    timeout_s: float = 600,
    session_nodes: int = 1,
    init_distributed: bool = False,
    **kwargs: Any,
) -> remote.LiveSession:
    client = Client.local(home.root)
    mode = SessionMode(idle_timeout_s=timeout_s, init_distributed=init_distributed)
    options = PackageOptions(session=mode, **kwargs)
    return remote.start(client, _project(f"live-{new_id()}", session_nodes), options)


@pytest.fixture(scope="module")
def live(local_home: Home, ssh_keys: Path) -> Iterator[remote.LiveSession]:
    session = start_session(local_home, pip=("numpy",))
    yield session
    session.stop()
    session.job.wait(60)
    session.job.client.close()


@pytest.fixture
def rip(local_home: Home, live: remote.LiveSession) -> Iterator[InteractiveShell]:
    """The magics with ``live`` as the current session."""
    with magics_on(local_home, live.job.project) as shell:
        magics = shell.magics_manager.registry["BtMagics"]
        magics.live.sessions[live.id] = magics.live.current = live
        yield shell
        for other in magics.live.sessions.values():
            if other is not live:  # attached anew by the test: its connections end here
                other.close()
        magics.live.current = None
        magics.live.sessions.clear()


def _png() -> bytes:
    """A 1x1 red PNG, made here (no image library in the job)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack("!I", len(data)) + body + struct.pack("!I", zlib.crc32(body))

    header = struct.pack("!IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- cells


def test_variables_persist_and_output_streams_back(rip: InteractiveShell) -> None:
    with capture_output() as first:
        rip.run_cell_magic(
            "bt_remote", "", "import os\nx = 41\nprint('node', os.environ['BT_NODE_RANK'])"
        )
    assert "node 0" in first.stdout
    with capture_output() as second:
        rip.run_cell_magic("bt_remote", "", "x += 1\nprint('x is', x)\nx * 10")
    assert "x is 42" in second.stdout
    assert any(o.data.get("text/plain") == "420" for o in second.outputs)
    assert "x" not in rip.user_ns  # it lives in the session, not here


def test_rich_output_arrives_as_png(rip: InteractiveShell) -> None:
    png = _png()
    rip.user_ns["png"] = png
    rip.run_line_magic("bt_push", "png")
    with capture_output() as shown:
        rip.run_cell_magic(
            "bt_remote", "", "from IPython.display import Image, display\ndisplay(Image(data=png))"
        )
    images = [o.data["image/png"] for o in shown.outputs if "image/png" in o.data]
    assert images, shown.outputs
    import base64

    assert base64.b64decode(images[0]) == png


def test_remote_traceback_names_the_cells_lines(rip: InteractiveShell) -> None:
    with pytest.raises(RemoteCellError) as raised:
        rip.run_cell_magic("bt_remote", "", "a = 1\n\nb = a / 0")
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(raised.value._render_traceback_()))
    assert "ZeroDivisionError" in text
    assert "line 4" in text  # the %%bt_remote line is line 1 of the notebook cell
    assert "b = a / 0" in text


def test_a_notebook_name_missing_remotely_says_push_it(rip: InteractiveShell) -> None:
    rip.user_ns["only_here"] = 3
    with pytest.raises(RemoteCellError) as raised:
        rip.run_cell_magic("bt_remote", "", "only_here + 1")
    assert "%bt_push only_here" in "\n".join(raised.value._render_traceback_())


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here, as in a kernel running a cell (ipykernel sets
    that handler for each cell): a library an earlier test of this worker used may have
    left its own (a full run once hung 600 s on a SIGINT that raised nothing)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_interrupt_stops_the_cell_not_the_session(
    rip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook's stop button is SIGINT to its kernel: here, to this process once the
    remote cell loops (a fixed delay could fire before the magic reached its wait, on a
    busy machine, and stop the test run instead)."""
    waited: list[dict[int, remote_kernel.RunningCell]] = []
    real_run_cells = remote_session.run_cells

    def watched(cells: dict[int, remote_kernel.RunningCell], show: Any) -> None:
        waited.append(cells)
        real_run_cells(cells, show)

    monkeypatch.setattr(remote_session, "run_cells", watched)
    pressed: list[float] = []

    def stop_button() -> None:
        wait_for(lambda: waited and all(c.started for c in waited[0].values()), 120,
                 "the remote cell to start", every=0.05)  # fmt: skip
        pressed.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=stop_button)
    presser.start()
    with pytest.raises(RemoteCellError) as raised:
        rip.run_cell_magic("bt_remote", "", "n = 0\nwhile True:\n    n += 1")
    presser.join()
    assert "KeyboardInterrupt" in str(raised.value)
    assert time.monotonic() - pressed[0] < 30
    with capture_output() as after:
        rip.run_cell_magic("bt_remote", "", "print('still here', n > 0)")
    assert "still here True" in after.stdout


def test_an_interrupt_sent_before_the_cell_starts_still_stops_it(
    rip: InteractiveShell, live: remote.LiveSession
) -> None:
    """Ctrl-C a moment after the cell was sent: the node's kernel may not have begun it
    (on a busy machine; a kernel between cells ignores SIGINT). The cell is still
    interrupted, and the session still answers."""
    connected = live.kernel(0)
    with connected.lock:
        # the kernel is kept from the cell for 3 s, deaf to SIGINT as between cells
        connected.kernel.start(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(3)",
            None,
        )
        cell = connected.kernel.start("import time\nwhile True:\n    time.sleep(0.01)", None)
        cell.interrupt()  # lands while the kernel is deaf: the cell has not started
        started = time.monotonic()
        remote_kernel.run_cells({0: cell}, lambda node, output: None)
    assert cell.result().ename == "KeyboardInterrupt"
    assert cell.reply is not None  # stopped by the interrupt, not given up on
    assert time.monotonic() - started < remote_kernel.INTERRUPT_GRACE_S
    with capture_output() as after:
        rip.run_cell_magic("bt_remote", "", "print('still answering')")
    assert "still answering" in after.stdout


def test_push_and_pull_values(rip: InteractiveShell) -> None:
    rip.run_cell("import numpy as np\ndef scale(v):\n    return v * 2")
    rip.run_cell("arr = np.arange(1_000_000, dtype='float32')")
    rip.run_line_magic("bt_push", "arr scale")
    rip.run_cell_magic(
        "bt_remote", "-o doubled", "doubled = scale(arr)\ntotal = float(doubled.sum())"
    )
    assert isinstance(rip.user_ns["doubled"], np.ndarray)
    np.testing.assert_array_equal(rip.user_ns["doubled"], np.arange(1_000_000) * 2)
    rip.run_line_magic("bt_pull", "total")
    assert rip.user_ns["total"] == float((np.arange(1_000_000, dtype="float32") * 2).sum())


# --------------------------------------------------------------------------- bad input


def test_a_remote_cell_without_a_session_says_how_to_start_one(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="no live session: start one with %bt_session start"):
        ip.run_cell_magic("bt_remote", "", "1")


def test_bad_input_is_one_line_and_the_session_keeps_working(rip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"--node 3: session \w+ has 1 node\(s\), numbered 0 to 0"):
        rip.run_cell_magic("bt_remote", "--node 3", "1")
    with pytest.raises(UsageError, match="node 0 has no variable nowhere"):
        rip.run_line_magic("bt_pull", "nowhere")
    with pytest.raises(UsageError, match="not defined in this notebook"):
        rip.run_line_magic("bt_push", "not_here")
    rip.run_line_magic("config", "BtMagics.max_value_mb = 0.5")
    try:
        rip.run_cell_magic("bt_remote", "", "big = bytes(2_000_000)")
        with pytest.raises(UsageError, match=r"big is 2\.0 MB pickled; the limit is 0 MB"):
            rip.run_line_magic("bt_pull", "big")
        rip.user_ns["big_here"] = bytes(2_000_000)
        with pytest.raises(UsageError, match="big_here"):
            rip.run_line_magic("bt_push", "big_here")
    finally:
        rip.run_line_magic("config", "BtMagics.max_value_mb = 100.0")
    rip.run_cell("import pandas as pd\nframe = pd.DataFrame({'a': [1]})")
    with pytest.raises(UsageError, match=r"No module named 'pandas'.*start one with --pip pandas"):
        rip.run_line_magic("bt_push", "frame")
    rip.run_cell_magic("bt_remote", "", "import threading\nremote_lock = threading.Lock()")
    with pytest.raises(UsageError, match="node 0 could not send remote_lock: TypeError"):
        rip.run_line_magic("bt_pull", "remote_lock")
    rip.user_ns["lock"] = threading.Lock()
    with pytest.raises(UsageError, match="lock"):
        rip.run_line_magic("bt_push", "lock")
    for line in ("--node x", "--node 0 --all", "--bogus"):
        with pytest.raises(UsageError, match="%%bt_remote"):
            rip.run_cell_magic("bt_remote", line, "1")
    with pytest.raises(UsageError, match="--sweep is for %%bt_train"):
        rip.run_line_magic("bt_session", "start --sweep lr=1,2")
    with pytest.raises(UsageError, match="a duration such as 45m"):
        rip.run_line_magic("bt_session", "start --timeout soon")
    with capture_output() as still:
        rip.run_cell_magic("bt_remote", "", "print('fine')")
    assert "fine" in still.stdout


def test_the_kernel_listens_on_loopback_with_a_private_connection_file(
    local_home: Home, live: remote.LiveSession
) -> None:
    live.kernel(0)
    path = connection_file(local_home.node_home(live.id, 0))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    import json

    assert json.loads(path.read_text())["ip"] == "127.0.0.1"


def test_attach_after_a_kernel_restart_finds_the_variables(
    local_home: Home, live: remote.LiveSession, rip: InteractiveShell
) -> None:
    rip.run_cell_magic("bt_remote", "", "kept = 'across restarts'")
    magics = rip.magics_manager.registry["BtMagics"]
    magics.live.current = None
    magics.live.sessions.clear()  # what a kernel restart leaves: nothing
    with capture_output() as attached:
        rip.run_line_magic("bt_session", f"attach {live.id}")
    assert f"Attached to session {live.id}" in attached.stdout
    with capture_output() as read:
        rip.run_cell_magic("bt_remote", "", "print(kept)")
    assert "across restarts" in read.stdout


def test_attach_refuses_a_job_that_is_not_a_session(ip: InteractiveShell) -> None:
    ip.run_cell_magic("bt_train", "-o plain --no-checkpointing", "print('a cell')")
    job = ip.user_ns["plain"]
    with pytest.raises(UsageError, match=f"job {job.id} is not a live session"):
        ip.run_line_magic("bt_session", f"attach {job.id}")


def test_all_nodes_at_once_with_torch_distributed(local_home: Home, ssh_keys: Path) -> None:
    """--all runs the cell on every node at once; --init-distributed joined them in one
    gloo group first, so an all_reduce sums across the nodes."""
    session = start_session(local_home, session_nodes=2, init_distributed=True)
    try:
        with magics_on(local_home, session.job.project) as shell:
            magics = shell.magics_manager.registry["BtMagics"]
            magics.live.sessions[session.id] = magics.live.current = session
            cell = (
                "import torch, torch.distributed as dist\n"
                "t = torch.tensor([float(dist.get_rank() + 1)])\n"
                "dist.all_reduce(t)\n"
                "print('sum', int(t.item()), 'of', dist.get_world_size())"
            )
            with capture_output() as shown:
                shell.run_cell_magic("bt_remote", "--all", cell)
            magics.live.current = None
            magics.live.sessions.clear()
        lines = sorted(line for line in shown.stdout.splitlines() if "sum" in line)
        assert lines == ["[node 0] sum 3 of 2", "[node 1] sum 3 of 2"], shown.stdout
    finally:
        session.stop()
        session.job.wait(60)
        session.job.client.close()


def test_bt_debug_opens_the_failing_frame(ip: InteractiveShell) -> None:
    """--interactive on_failure keeps the failed process; %bt_debug attaches to it and
    the failing frame's locals are readable there."""
    cell = (
        "def train(steps):\n"
        "    loss = 1.5\n"
        "    for step in range(steps):\n"
        "        loss = loss * 0.5\n"
        "        if step == 2:\n"
        "            raise ValueError('diverged')\n"
        "train(5)"
    )
    ip.run_cell_magic("bt_train", "-o failing --no-checkpointing --interactive on_failure", cell)
    job = ip.user_ns["failing"]
    try:
        with capture_output() as attached:
            ip.run_line_magic("bt_debug", job.id)
        assert "ValueError: diverged" in attached.stdout
        assert "step = 2" in attached.stdout
        assert "loss = 0.1875" in attached.stdout
        with capture_output() as read:
            ip.run_cell_magic("bt_remote", "", "print('at step', step, 'loss', loss)")
        assert "at step 2 loss 0.1875" in read.stdout
        assert job.refresh().status.short == "RUNNING"  # kept for debugging
    finally:
        ip.run_line_magic("bt_session", f"stop {job.id}")
    assert job.wait(60).status.is_terminal


def test_bt_debug_refuses_a_job_that_keeps_nothing(ip: InteractiveShell) -> None:
    ip.run_cell_magic("bt_train", "-o plain --no-checkpointing --wait", "print('a cell')")
    with pytest.raises(UsageError, match="keeps no failed process: submit it with"):
        ip.run_line_magic("bt_debug", ip.user_ns["plain"].id)


def test_a_sessions_pip_names_get_the_notebooks_versions() -> None:
    """A session has no cell to detect imports from: a bare --pip name is pinned to the
    version this notebook has (as detection pins a cell's), anything else kept."""
    import numpy

    options = PackageOptions(pip=("numpy", "torch>=2", "not-installed-here"), session=SessionMode())
    bundle = package_cell("", {}, options)
    assert f"numpy=={numpy.__version__}" in bundle.requirements
    assert "torch>=2" in bundle.requirements
    assert "not-installed-here" in bundle.requirements
    assert any(r.startswith("ipykernel==") for r in bundle.requirements)
    assert "--session --idle-timeout 1800" in bundle.manifest["entry_point"]


def test_the_local_shortcut_still_reads_the_key_over_ssh(
    local_home: Home, live: remote.LiveSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the local service the kernel's own ports may be used (an optimisation); over
    SSH (what Baseten needs, and these tests use) they are forwarded. Either way the key
    came through the SSH connection."""
    import json

    info = json.loads(connection_file(local_home.node_home(live.id, 0)).read_text())
    live.close()
    monkeypatch.delenv(TRANSPORT_ENV)
    direct = live.kernel(0)
    assert direct.kernel.client.shell_port == info["shell_port"]
    assert direct.tunnel.is_open
    out: list[str] = []
    live.run("print('direct')", [0], lambda o: out.append(o.content.get("text", "")))
    assert "direct" in "".join(out)
    live.close()
    monkeypatch.setenv(TRANSPORT_ENV, "ssh")
    assert live.kernel(0).kernel.client.shell_port != info["shell_port"]


def test_start_dry_run_shows_the_session_job_and_submits_nothing(ip: InteractiveShell) -> None:
    with capture_output() as shown:
        ip.run_line_magic(
            "bt_session", "start --gpu H100:2 --nodes 2 --pip numpy --timeout 2h --dry-run"
        )
    out = shown.stdout
    assert "python -m bt_jupyter.runtime --session --idle-timeout 7200" in out
    assert '"node_count": 2' in out
    assert "ipykernel==" in out
    assert "dry run: nothing was submitted" in out
    magics = ip.magics_manager.registry["BtMagics"]
    assert magics.live.current is None


def test_timeouts_read_as_people_write_them() -> None:
    from bt_jupyter.session_magics import parse_timeout
    from bt_jupyter.sessions import duration

    assert [duration(s) for s in (100, 1200, 9000, 0.4)] == ["1m 40s", "20m", "2h 30m", "0s"]
    assert [parse_timeout(t) for t in ("45m", "2h", "90s", "30")] == [2700, 7200, 90, 1800]
    for bad in ("0s", "8d", "-5m", "soon", "1e9"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_timeout(bad)


def test_start_options_take_notebook_values_once(ip: InteractiveShell) -> None:
    """$name and {expression} in the start line are the notebook's, expanded once."""
    ip.user_ns["hours"] = 2
    ip.user_ns["lib"] = "numpy"
    with capture_output() as shown:
        ip.run_line_magic("bt_session", "start --pip $lib --timeout {hours}h --dry-run")
    assert "--idle-timeout 7200" in shown.stdout
    assert "numpy==" in shown.stdout


def test_list_shows_the_projects_live_sessions(
    rip: InteractiveShell, live: remote.LiveSession
) -> None:
    with capture_output() as listed:
        rip.run_line_magic("bt_session", "list")
    assert f"* {live.id}  RUNNING" in listed.stdout
    with capture_output() as empty:
        rip.run_line_magic("bt_session", "list no-such-project")
    assert "No live sessions in project 'no-such-project'" in empty.stdout
