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
    p.add_argument("--latex", metavar="FILE", help="write the table as a LaTeX fragment (booktabs)")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment import evaluate

    cfg = load_config(args)
    check_outputs([("--out", args.out, "folder"), (cache_flag(args), cfg.cache_dir, "folder"),
                   ("--latex", args.latex, "file"), ("--markdown", args.markdown, "file")])
    prepare_synthetic(cfg, args, [cfg.benchmark.split])
    result = show_evaluation(cfg, evaluate(cfg))
    for path in (args.latex, args.markdown):
        if path and result.metrics:
            evaluation_report(cfg, result).write(path)
    if args.out:
        write_outputs(args.out, result)
    return 0


def evaluation_report(cfg, result):
    """The table of stage one and stage one + two, with their timings."""
    from ..eval.report import Report

    b = result.benchmark
    rows = {result.stages[stage]: m for stage, m in result.metrics.items()}
    title = f"{b.name} {b.release or b.category or ''} {b.split}".replace("  ", " ")
    return Report.from_rows(title, rows, report_caption(b, cfg), extra_columns=("ms/query",))


def show_evaluation(cfg, result):
    b = result.benchmark
    what = "cache hit: no gallery image encoded" if result.images_encoded == 0 else f"{result.images_encoded} gallery images encoded"
    console.print(f"[dim]gallery {len(b.gallery)} images ({what}, {result.index_seconds:.1f} s); {len(b.queries)} queries[/]")
    if result.metrics:
        console.print(evaluation_report(cfg, result).table())
    else:
        console.print(f"{b.name} {b.split} has no targets: write the runs (and submission files) with --out")
    if result.terms:
        console.print(terms_table(result))
    return result


def terms_table(result):
    """Whether the sparse stage one's terms mean their words: the four fractions of cir.eval.term_metrics."""
    from rich.table import Table

    b = result.benchmark
    table = Table(title=f"sparse terms, {b.label} (whole split)", caption="docs/sparse-terms.md defines them",
                  caption_justify="left")
    for name in result.terms:
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in result.terms.values()))
    return table


def write_outputs(out: Path, result) -> None:
    out.mkdir(parents=True, exist_ok=True)
    from ..experiment import run_for_file

    for stage, run in result.runs.items():
        run_for_file(run, result.benchmark).save(out / f"run.{stage}.json")
    if result.metrics:
        metrics = {stage: dict(m) for stage, m in result.metrics.items()}
        metrics.setdefault("stage1", {}).update(result.terms)  # fractions in [0, 1] and the terms cost, beside the percents
        write_json(out / "metrics.json", metrics)
    b = result.benchmark
    if b.targets is None and b.name == "cirr":
        from ..eval.submission import write_submission

        final = next(reversed(result.runs.values()))
        for path in write_submission(b, final, out):
            console.print(f"wrote {escape(str(path))}")
    console.print(f"wrote {escape(str(out))}/")
