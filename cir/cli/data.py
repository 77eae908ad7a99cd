"""`cir data`: generate the synthetic CIR benchmark (`synth`) and look at it (`show`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from .console import console

SPLIT_CHOICES = ("train", "val", "test")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="generate the synthetic benchmark, or draw a contact sheet of it")
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    actions.required = True

    synth = actions.add_parser(
        "synth",
        help="write the synthetic CIR benchmark (CIRR layout, release 'synth')",
        description="Generate coloured-shape scenes, modification texts with known meaning and hard img_sets, "
        "written as captions/cap.synth.<split>.json, image_splits/split.synth.<split>.json, <split>/*.png "
        "and metadata.json. The same seed gives byte-identical files.",
    )
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder (replaced if synthetic)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--size", choices=("tiny", "small", "default"), default="default",
                       help="tiny: 300/100/100 queries, small: 4k/1k/1k, default: 20k/2k/2k (train/val/test)")
    synth.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--workers", type=int, default=None, help="rendering processes (default: all CPUs)")
    synth.add_argument("--splits", nargs="+", choices=SPLIT_CHOICES, default=SPLIT_CHOICES, metavar="SPLIT",
                       help="the splits to write (default: train val test); the files are those of a full run")
    synth.set_defaults(func=run_synth)

    show = actions.add_parser("show", help="draw queries (reference, text, target, img_set) into a PNG contact sheet")
    show.add_argument("root", type=Path, help="dataset folder written by `cir data synth`")
    show.add_argument("--split", choices=SPLIT_CHOICES, default="val")
    show.add_argument("--n", type=int, default=12, help="number of queries (default 12)")
    show.add_argument("--out", type=Path, default=None, help="PNG to write (default ./contact_sheet_<split>.png)")
    show.set_defaults(func=run_show)


def run_synth(args: argparse.Namespace) -> int:
    from ..data.synth import generate, load_metadata
    from .common import check_output

    check_output("--out", args.out, "folder")
    started = time.perf_counter()
    root = generate(args.out, seed=args.seed, size=args.size, image_size=args.image_size, workers=args.workers,
                    splits=args.splits)
    elapsed = time.perf_counter() - started
    metadata = load_metadata(root)
    console.print(f"synthetic CIR benchmark written to [bold]{escape(str(root))}[/] (size {args.size}, seed {args.seed}) "
                  f"in {elapsed:.1f} s")
    table = Table()
    for column in ("split", "queries", "gallery images", "phrasings"):
        table.add_column(column, justify="left" if column in ("split", "phrasings") else "right")
    heldout = metadata["phrasings"]["heldout"]["splits"]
    for split in (s for s in SPLIT_CHOICES if s in metadata["splits"]):
        content = metadata["splits"][split]
        table.add_row(split, f"{len(content['queries']):,}", f"{len(content['scenes']):,}",
                      "held-out" if split in heldout else "training")
    console.print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..data.synth.contact_sheet import contact_sheet
    from .common import check_output

    check_output("--out", args.out, "file")
    path = contact_sheet(args.root, split=args.split, n=args.n, out=args.out)
    console.print(f"contact sheet of the first {args.n} {args.split} queries: {escape(str(path))}")
    return 0
