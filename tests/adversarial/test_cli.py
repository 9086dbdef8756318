"""``bt-jupyter`` given bad input: one clear line on stderr, a non-zero exit, nothing
changed (and never a value echoed back)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bt_jupyter.local.home import Home
from tests.adversarial.checks import assert_one_clear_line, unchanged


def _cli(home: Home, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BT_JUPYTER_HOME": str(home.root)}
    return subprocess.run(
        [sys.executable, "-m", "bt_jupyter.cli", *argv],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def _refused(done: subprocess.CompletedProcess[bytes], *mentions: str) -> str:
    assert done.returncode != 0, done.stdout
    assert done.stdout == b""
    return assert_one_clear_line(done.stderr.decode(errors="replace"), *mentions)


BAD_NAMES = {
    "empty": "",
    "dot-dot": "../x",
    "slash": "a/b",
    "space": "with space",
    "escape-sequence": "\x1b[31mred",
    "newline": "a\nb",
    "too-long": "n" * 5000,
    "unicode-lookalike": "ѕecret",  # noqa: RUF001 (the point of the case)
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_secret_name_is_refused(local_home: Home, name: str) -> None:
    with unchanged(local_home):
        message = _refused(_cli(local_home, "secrets", "set", "--", name, stdin=b"value"))
    assert "secret name" in message
    assert len(message) < 300


BAD_VALUES = {
    "empty": b"",
    "only-newline": b"\n",
    "nul": b"abc\x00def",
    "too-big": b"v" * (2 * 1024 * 1024),
    "not-utf8": b"\xff\xfe\xfd",
}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_secret_value_is_refused_and_never_echoed(local_home: Home, value: bytes) -> None:
    with unchanged(local_home):
        message = _refused(_cli(local_home, "secrets", "set", "fine_name", stdin=value), "value")
    assert "def" not in message
    assert "vvvv" not in message


def test_deleting_a_secret_that_does_not_exist_is_one_line(local_home: Home) -> None:
    with unchanged(local_home):
        _refused(_cli(local_home, "secrets", "delete", "never_set"), "'never_set'")


ARGV_MISTAKES = {
    "no-command": (),
    "unknown-command": ("frobnicate",),
    "unknown-local-action": ("local", "explode"),
    "port-without-value": ("local", "start", "--port"),
    "secrets-without-action": ("secrets",),
    "set-without-name": ("secrets", "set"),
    "unknown-option": ("secrets", "list", "--all-values"),
}


@pytest.mark.parametrize("argv", ARGV_MISTAKES.values(), ids=ARGV_MISTAKES.keys())
def test_a_command_line_mistake_is_one_line_with_the_way_to_help(
    local_home: Home, argv: tuple[str, ...]
) -> None:
    with unchanged(local_home):
        _refused(_cli(local_home, *argv), "--help")
