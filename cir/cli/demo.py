"""`cir demo`: the main job on a fresh clone: the synthetic benchmark (the evaluated split, generated if absent), the
shipped tiny model, both stages evaluated and tabulated, the second run served from the feature cache."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    from ..experiment import evaluate

    if not is_complete(args.data, splits=(args.split,)):
        console.print(f"writing the {args.split} split of the synthetic benchmark to {args.data} (what the demo "
                      f"evaluates; `cir data synth --out {args.data}` writes all three for training)")
        ensure_synthetic(args.data, splits=(args.split,))
    cfg = Config()
    cfg.benchmark.root = str(args.data)
    cfg.benchmark.split = args.split
    cfg.cache_dir = args.cache_dir
    console.print(f"[bold]cir demo[/]: synthetic benchmark at {args.data}, shipped model {cfg.model.pretrained}")
    result = show_evaluation(cfg, evaluate(cfg))
    if args.out:
        write_outputs(args.out, result)
    return 0
