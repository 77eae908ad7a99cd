"""The `cir` console script: one sub-command module per job, each with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rich.markup import escape

from ..errors import CirError
from .console import error_console

# Each module defines `register(subparsers)`; the order is the order of `cir --help`.
COMMAND_MODULES = ("demo", "eval", "search", "explain", "score", "report", "submit", "data", "train", "index", "stages", "serve", "loadtest", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cir", description="Two-stage composed image retrieval.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..machine import configure_threads

    configure_threads()  # before any command imports torch
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except CirError as exc:
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        error_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
