"""What the runtime keeps of a cell's working folder, and how the notebook reads it back,
at the edges: links, hidden names, the bundle, unsafe names from a service."""

from __future__ import annotations

from pathlib import Path

import pytest

from bt_jupyter import job_files, runtime
from bt_jupyter.errors import DownloadError


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "node"
    (folder / runtime.BUNDLE_DIR).mkdir(parents=True)
    (folder / runtime.BUNDLE_DIR / "cell.py").write_text("x = 1\n")
    (folder / "data.jsonl").write_text("{}\n")
    monkeypatch.setenv("BT_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return folder


def _kept(tmp_path: Path) -> set[str]:
    root = tmp_path / "ckpt" / runtime.OUTPUTS_DIR / runtime.FILES_DIR
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_only_what_the_cell_wrote_is_kept_and_never_through_a_link(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = runtime.working_files(node)
    secret = tmp_path / "outside.txt"
    secret.write_text("not the job's")
    (node / "leak.txt").symlink_to(secret)  # a link out of the working folder
    (node / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    (node / ".env").write_text("TOKEN=1")  # hidden: never kept
    (node / "__pycache__").mkdir()
    (node / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (node / runtime.BUNDLE_DIR / "new.txt").write_text("the bundle's own folder")
    (node / "out").mkdir()
    (node / "out" / "model.pth").write_bytes(b"weights")
    (node / "data.jsonl").write_text('{"changed": true}\n')  # rewritten by the cell
    runtime.keep_working_files(before, node, limit_mb=1)
    assert _kept(tmp_path) == {"out/model.pth", "data.jsonl"}
    assert "kept 2 file(s) the cell wrote" in capsys.readouterr().out


def test_files_over_the_cap_are_named_in_a_warning(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = runtime.working_files(node)
    for i in range(7):
        (node / f"part-{i}.bin").write_bytes(bytes(600))
    runtime.keep_working_files(before, node, limit_mb=0.001)  # 1,000 bytes: one file fits
    assert _kept(tmp_path) == {"part-0.bin"}
    warned = [
        w for w in map(runtime.trackers.parse_warning, capsys.readouterr().out.splitlines()) if w
    ]
    assert len(warned) == 1
    assert warned[0].startswith(
        "not kept, over the 0.001 MB or 10,000 files a job keeps: part-1.bin"
    )
    assert "and 1 more" in warned[0]


def test_no_more_than_max_files_are_kept(
    node: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset unpacked into the working folder is not thousands of outputs."""
    monkeypatch.setattr(runtime, "MAX_FILES", 3)
    before = runtime.working_files(node)
    for i in range(5):
        (node / f"shard-{i}.txt").write_text("x")
    runtime.keep_working_files(before, node, limit_mb=1)
    assert _kept(tmp_path) == {"shard-0.txt", "shard-1.txt", "shard-2.txt"}


def test_only_local_rank_zero_keeps_files_and_nothing_without_a_volume(
    node: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = runtime.working_files(node)
    (node / "plot.svg").write_text("<svg/>")
    monkeypatch.setenv("LOCAL_RANK", "1")
    runtime.keep_working_files(before, node, limit_mb=1)
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("BT_CHECKPOINT_DIR")
    runtime.keep_working_files(before, node, limit_mb=1)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    ("name", "inside"),
    [
        ("rank-0/bt-outputs/files/model.pth", "model.pth"),
        ("bt-outputs/files/out/config.json", "out/config.json"),  # Baseten: no rank folder
        ("rank-0/checkpoint-6/model.safetensors", None),
        ("rank-0/bt-outputs/outputs.pkl", None),
        ("rank-0/bt-outputs/files", None),
    ],
)
def test_a_file_name_from_the_service_is_read_under_the_files_folder_only(
    name: str, inside: str | None
) -> None:
    found = job_files._inside_files(name)
    assert (found.as_posix() if found else None) == inside


@pytest.mark.parametrize(
    "name",
    ["rank-0/bt-outputs/files/../../../etc/passwd", "/bt-outputs/files/x", "bt-outputs/files/\0"],
)
def test_an_unsafe_file_name_from_the_service_is_refused(name: str) -> None:
    with pytest.raises(DownloadError, match="unsafe file name"):
        job_files._inside_files(name)


def test_a_file_opens_as_its_kind(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"loss": 0.5}')
    (tmp_path / "notes.txt").write_text("done")
    (tmp_path / "blob.xyz").write_bytes(b"\1")
    assert job_files.open_file(tmp_path / "metrics.json") == {"loss": 0.5}
    assert job_files.open_file(tmp_path / "notes.txt") == "done"
    assert job_files.open_file(tmp_path / "blob.xyz") == tmp_path / "blob.xyz"
