"""`cir submit`: write the evaluation-server files of a run (CIRR test1, CIRCO test), or check existing ones."""

from __future__ import annotations

import argparse

from rich.markup import escape

from ..data import load_benchmark
from ..errors import CirError
from ..eval.submission import check_submission_file, write_submission
from ..types import Run
from .console import console

DEFAULT_SPLITS = {"cirr": "test1", "circo": "test"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="write or check evaluation-server files (CIRR, CIRCO)",
        description="Build the test-server files of a run (checked against the server's rules before writing), "
        "or check existing files with --check.",
    )
    parser.add_argument("benchmark", choices=sorted(DEFAULT_SPLITS))
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--run", metavar="FILE", help="run file to turn into server files")
    action.add_argument("--check", nargs="+", metavar="FILE", help="existing server files to check")
    parser.add_argument("--out", metavar="DIR", help="folder for the server files (with --run)")
    parser.add_argument("--root", metavar="DIR", help="the benchmark's annotation folder")
    parser.add_argument("--split", help="split (default: test1 for CIRR, test for CIRCO)")
    parser.add_argument("--release", help="CIRR release (default: the only one in --root)")
    parser.set_defaults(func=submit)


def submit(args: argparse.Namespace) -> int:
    if args.run and not args.out:
        raise CirError("--out DIR is required with --run: the folder the server files are written to")
    if args.run:
        from .common import check_output

        check_output("--out", args.out, "folder")
    split = args.split or DEFAULT_SPLITS[args.benchmark]
    benchmark = load_benchmark(args.benchmark, args.root, split, release=args.release)
    if args.check:
        for path in args.check:
            holds = check_submission_file(benchmark, path)
            summary = f"{holds} for all {len(benchmark.queries):,} queries of {benchmark.label}"
            console.print(f"[green]ok[/] {escape(str(path))}: {summary}", soft_wrap=True)
        return 0
    run = Run.load(args.run)
    run.name = args.run
    for path in write_submission(benchmark, run, args.out):
        console.print(f"wrote {escape(str(path))}", soft_wrap=True)
    return 0
