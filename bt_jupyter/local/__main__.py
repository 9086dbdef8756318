"""``python -m bt_jupyter.local serve``: the service process itself (see daemon.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bt_jupyter.local.home import Home
from bt_jupyter.local.service import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bt_jupyter.local")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(Home(args.home) if args.home else Home.default(), args.port)


if __name__ == "__main__":
    main()
