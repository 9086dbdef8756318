"""``python -m bt_jupyter.local serve``: the service process itself (see daemon.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bt_jupyter.local.daemon import PortError, parse_port
from bt_jupyter.local.home import Home
from bt_jupyter.local.service import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bt_jupyter.local")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--port", default="0", help="1..65535, or 0 for any free port")
    args = parser.parse_args()
    try:
        port = parse_port(args.port)
    except PortError as exc:
        parser.exit(2, f"error: {exc}\n")
    serve(Home(args.home) if args.home else Home.default(), port)


if __name__ == "__main__":
    main()
