"""`cir demo`: the main job on a fresh clone: the synthetic benchmark (the evaluated split, generated if absent), the
shipped tiny model, both stages evaluated and tabulated, the second run served from the feature cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from ..config import Config
from .console import console
from .eval import show_evaluation, write_outputs


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="generate the synthetic benchmark if absent, evaluate the shipped model")
    p.add_argument("--data", type=Path, default=Path("data/synth"), help="synthetic benchmark folder (default data/synth)")
    p.add_argument("--cache-dir", default=".cir-cache", help="gallery feature cache (default .cir-cache)")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--out", type=Path, help="also write run files and metrics.json here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synth import ensure_synthetic, is_complete
    from ..data.synth.writer import check_can_write
    from ..experiment import evaluate
    from .common import check_outputs

    check_outputs([("--out", args.out, "folder"), ("--cache-dir", args.cache_dir, "folder"),
                   ("--data", args.data, "folder")])
    if not is_complete(args.data, splits=(args.split,)):
        check_can_write(args.data, flag="--data")
        console.print(f"writing the {args.split} split of the synthetic benchmark to {escape(str(args.data))} (what the demo "
                      f"evaluates; `cir data synth --out {escape(str(args.data))}` writes all three for training)")
        ensure_synthetic(args.data, splits=(args.split,), flag="--data")
    cfg = Config()
    cfg.benchmark.root = str(args.data)
    cfg.benchmark.split = args.split
    cfg.cache_dir = args.cache_dir
    console.print(f"[bold]cir demo[/]: synthetic benchmark at {escape(str(args.data))}, shipped model {cfg.model.pretrained}")
    result = show_evaluation(cfg, evaluate(cfg))
    if args.out:
        write_outputs(args.out, result)
    return 0
