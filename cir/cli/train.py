"""`cir train stage1|stage2|sparse|sparse-words --config FILE`: train a stage on the config's benchmark (train split), validating on
its evaluation split after each epoch; resumable from the output folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from .common import add_config_options, cache_flag, check_outputs, load_config, prepare_synthetic
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train stage one (dense), stage two (reranker), the sparse heads or their word terms")
    p.add_argument("stage", choices=("stage1", "stage2", "sparse", "sparse-words"))
    add_config_options(p)
    p.add_argument("--out", type=Path, help="output folder (default: the config's train_<stage>.out)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--max-queries", type=int, help="train on the first N queries only")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--no-resume", action="store_true", help="start over even if the output folder holds a state")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.runner import train_section, train_stage

    cfg = load_config(args)
    section = train_section(args.stage)
    tcfg = getattr(cfg, section)
    for name in ("epochs", "max_queries", "threads"):
        if getattr(args, name) is not None:
            setattr(tcfg, name, getattr(args, name))
    out = args.out or Path(tcfg.out)
    out_flag = "--out" if args.out else f"{section}.out (config)"
    check_outputs([(out_flag, out, "folder"), (cache_flag(args), cfg.cache_dir, "folder")])
    prepare_synthetic(cfg, args, [cfg.benchmark.train_split, cfg.benchmark.split])  # trains on one, validates on the other
    metrics = train_stage(cfg, args.stage, out, resume=not args.no_resume)
    console.print(f"[bold]{args.stage}[/] trained: {escape(str(out))} ({', '.join(f'{k} {v:.2f}' for k, v in metrics.items() if isinstance(v, float))})")
    return 0
