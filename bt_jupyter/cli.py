"""``bt-jupyter``: manage the local service and its secrets from a terminal."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import NoReturn

from bt_jupyter.errors import BtJupyterError
from bt_jupyter.limits import shown
from bt_jupyter.local import daemon, envs, image_cache
from bt_jupyter.local.home import Home
from bt_jupyter.local.secrets import SecretStore, check_secret


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (its usage block hides the mistake in a terminal)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _cache(args: argparse.Namespace) -> int:
    """``bt-jupyter local cache [list|prune]``: the machine's image cache."""
    cache = envs.default_cache()
    if args.cache_action == "prune":
        if not 0 <= args.unused_days <= 36_500:
            print("error: --unused-days is a number of days, 0 or more", file=sys.stderr)
            return 2
        removed, freed = image_cache.prune(cache, args.unused_days)
        for line in removed:
            print(f"removed {line}")
        print(f"freed {freed / 1e6:,.0f} MB of {cache} (kept what a job used in the last "
              f"{args.unused_days:g} days)")  # fmt: skip
        return 0
    found = image_cache.entries(cache)
    if not found:
        print(f"the image cache {cache} is empty")
        return 0
    for e in found:
        age = f"  unused {e.unused_days:.1f} d" if e.unused_days is not None else ""
        print(f"{e.kind:<9} {e.name:<40} {e.bytes / 1e6:>9,.1f} MB{age}  {e.what}")
    total = sum(e.bytes for e in found)
    print(f"{total / 1e6:,.0f} MB in {cache} (a shared file counted once); "
          "`bt-jupyter local cache prune` frees what no job used for 14 days")  # fmt: skip
    return 0


def _local(args: argparse.Namespace, home: Home) -> int:
    if args.action == "cache":
        return _cache(args)
    if args.action == "start":
        port = daemon.parse_port(args.port)  # before anything starts: one clear line
        info = daemon.ensure_running(home, port)
        print(f"local service running at {info.url} (pid {info.pid}); state in {home.root}")
        if port and info.port != port:
            print(
                f"note: it was already running on port {info.port}; `bt-jupyter local stop` "
                f"first to move it to {port}",
                file=sys.stderr,
            )
    elif args.action == "stop":
        stopped = daemon.stop(home)
        print("local service stopped" if stopped else "local service was not running")
    else:
        found = daemon.status(home)
        if found is None:
            print(f"local service not running (state in {home.root})")
            return 3
        print(f"local service running at {found.url} (pid {found.pid}); state in {home.root}")
    return 0


def _stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the secret's value on stdin is not UTF-8 text") from None


def _secrets(args: argparse.Namespace, home: Home) -> int:
    store = SecretStore(home)
    if args.action == "list":
        for name in store.names():
            print(name)
    elif args.action == "delete":
        if not store.delete(args.name):
            print(f"error: no secret named {shown(args.name)}", file=sys.stderr)
            return 1
        print(f"deleted secret {shown(args.name)}")
    else:
        try:
            check_secret(args.name, "x")  # a bad name before asking for the value
            if sys.stdin.isatty():
                value = getpass.getpass(f"Value for secret {args.name!r} (not echoed): ")
            else:
                value = _stdin_text().rstrip("\n")
            store.set(args.name, value)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"saved secret {args.name!r} ({len(value)} characters) in {store.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="bt-jupyter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="the embedded local training service")
    local.add_argument("action", choices=["start", "stop", "status", "cache"])
    local.add_argument(
        "cache_action", nargs="?", choices=["list", "prune"], default="list",
        help="cache: list what the image cache holds, or prune what no job used lately",
    )  # fmt: skip
    local.add_argument(
        "--unused-days", type=float, default=14.0,
        help="prune: remove what no job used for this many days (default 14)",
    )  # fmt: skip
    # a string, checked by the daemon: argparse's own error would be a usage block
    local.add_argument(
        "--port", default="0", help="start: listen on this port (1..65535; 0: any free one)"
    )
    secrets = commands.add_parser("secrets", help="secrets that SecretReferences resolve to")
    secret_actions = secrets.add_subparsers(dest="action", required=True)
    setter = secret_actions.add_parser("set", help="set NAME from stdin or a hidden prompt")
    setter.add_argument("name")
    deleter = secret_actions.add_parser("delete")
    deleter.add_argument("name")
    secret_actions.add_parser("list", help="names only; values are never printed")
    args = parser.parse_args(argv)
    home = Home.default()
    try:
        return _local(args, home) if args.command == "local" else _secrets(args, home)
    except BtJupyterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
