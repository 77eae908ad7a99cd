"""`cir eval`: stage one and stage one + two on a benchmark, in one table; run files and metrics.json with --out."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from ..io import write_json
from .common import add_config_options, cache_flag, check_outputs, load_config, prepare_synthetic, report_caption
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate stage one and stage one + two on a benchmark")
    add_config_options(p)
    p.add_argument("--out", type=Path, help="folder for run files, metrics.json and (CIRR test) submission files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment import evaluate

    cfg = load_config(args)
    check_outputs([("--out", args.out, "folder"), (cache_flag(args), cfg.cache_dir, "folder")])
    prepare_synthetic(cfg, args, [cfg.benchmark.split])
    result = show_evaluation(cfg, evaluate(cfg))
    if args.out:
        write_outputs(args.out, result)
    return 0


def show_evaluation(cfg, result):
    from ..eval.report import render_report

    b = result.benchmark
    what = "cache hit: no gallery image encoded" if result.images_encoded == 0 else f"{result.images_encoded} gallery images encoded"
    console.print(f"[dim]gallery {len(b.gallery)} images ({what}, {result.index_seconds:.1f} s); {len(b.queries)} queries[/]")
    if result.metrics:
        rows = {result.stages[stage]: m for stage, m in result.metrics.items()}
        title = f"{b.name} {b.release or b.category or ''} {b.split}".replace("  ", " ")
        console.print(render_report(title, rows, report_caption(b, cfg), extra_columns=("ms/query",)))
    else:
        console.print(f"{b.name} {b.split} has no targets: write the runs (and submission files) with --out")
    return result


def write_outputs(out: Path, result) -> None:
    out.mkdir(parents=True, exist_ok=True)
    from ..experiment import run_for_file

    for stage, run in result.runs.items():
        run_for_file(run, result.benchmark).save(out / f"run.{stage}.json")
    if result.metrics:
        write_json(out / "metrics.json", result.metrics)
    b = result.benchmark
    if b.targets is None and b.name == "cirr":
        from ..eval.submission import write_submission

        final = next(reversed(result.runs.values()))
        for path in write_submission(b, final, out):
            console.print(f"wrote {escape(str(path))}")
    console.print(f"wrote {escape(str(out))}/")
