"""`cir score`: judge run files on a benchmark split; several runs are compared with a paired significance test."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data import BENCHMARK_NAMES, FASHIONIQ_CATEGORIES, Benchmark, load_benchmark, load_fashioniq_categories
from ..data.fashioniq import REPORTED
from ..errors import CirError
from ..eval.metrics import evaluate, summarize_categories
from ..eval.report import render_report, write_report_csv, write_report_json
from ..machine import machine_description
from ..eval.significance import TESTS, compare_runs
from ..eval.validate import warn_if_misordered
from ..types import Run
from .console import console

CATEGORY_FIELD = "{category}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score run files on a benchmark split",
        description="Score run files ({\"query id\": [[\"image id\", score], ...]}, best first) on a benchmark split. "
        "Several runs are compared side by side with a paired significance test per metric.",
    )
    parser.add_argument("benchmark", choices=BENCHMARK_NAMES)
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument(
        "--run", nargs="+", required=True, metavar="FILE",
        help=f"run file(s); for FashionIQ without --category, a path containing {CATEGORY_FIELD}",
    )
    parser.add_argument("--root", metavar="DIR", help="the benchmark's annotation folder")
    parser.add_argument("--category", choices=FASHIONIQ_CATEGORIES, help="FashionIQ category (default: all three)")
    parser.add_argument("--release", help="CIRR release (default: the only one in --root)")
    parser.add_argument(
        "--exclude-reference", action=argparse.BooleanOptionalAction, default=None,
        help="drop (or, with --no-exclude-reference, keep) each query's reference image before scoring; default: the "
        "benchmark's official rule (CIRR drops it, FashionIQ and CIRCO keep it). A departure is not the official "
        "protocol, and the caption says so",
    )
    parser.add_argument("--test", choices=TESTS, default="t-test", help="paired significance test (several runs)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument("--json", metavar="FILE", help="write every metric, in percent, as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    parser.set_defaults(func=score)


def score(args: argparse.Namespace) -> int:
    from .common import check_outputs

    check_outputs([("--json", args.json, "file"), ("--csv", args.csv, "file")])
    if args.benchmark == "fashioniq" and args.category is None:
        benchmarks = load_fashioniq_categories(args.root, args.split, exclude_reference=args.exclude_reference)
        if not all(CATEGORY_FIELD in path for path in args.run):
            raise CirError(
                f"FashionIQ without --category scores all three categories: give run paths containing "
                f"{CATEGORY_FIELD} (e.g. runs/fiq.{CATEGORY_FIELD}.json), or pass --category"
            )
    else:
        benchmark = load_benchmark(
            args.benchmark, args.root, args.split, category=args.category, release=args.release,
            exclude_reference=args.exclude_reference,
        )
        benchmarks = {benchmark.category or benchmark.name: benchmark}

    scored = {key: score_split(b, load_runs(args.run, b.category), args) for key, b in benchmarks.items()}
    if len(scored) == 1:
        report = next(iter(scored.values()))
    else:
        report = summarize_fashioniq(scored, args.split)
    if args.json:
        write_report_json(args.json, report["title"], report["rows"], report["caption"], **report["extra"])
    if args.csv:
        write_report_csv(args.csv, report["rows"])
    return 0


def load_runs(paths: list[str], category: str | None) -> dict[str, Run]:
    """Display name -> run; names are file stems unless two collide. Runs are named by their path for messages."""
    stems = [Path(p).stem for p in paths]
    runs = {}
    for template, stem in zip(paths, stems):
        path = template.replace(CATEGORY_FIELD, category) if category else template
        run = Run.load(path)
        run.name = path
        warn_if_misordered(run)
        runs[stem if stems.count(stem) == 1 else template] = run
    return runs


def score_split(benchmark: Benchmark, runs: dict[str, Run], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table of one split and return its report (title, rows, caption, extra JSON sections)."""
    caption = f"{benchmark.protocol}\n{machine_description()}"
    extra: dict[str, Any] = {"benchmark": describe(benchmark)}
    if len(runs) == 1:
        rows = {name: evaluate(benchmark, run) for name, run in runs.items()}
        console.print(render_report(benchmark.label, rows, caption))
    else:
        comparison = compare_runs(benchmark, runs, alpha=args.alpha, test=args.test, caption=caption)
        rows = comparison.means
        extra["significance"] = comparison.to_dict()
        console.print(comparison.table())
    return {"title": benchmark.label, "rows": rows, "caption": caption, "extra": extra}


def summarize_fashioniq(scored: dict[str, dict[str, Any]], split: str) -> dict[str, Any]:
    """The literature's FashionIQ table: per-category Recall@10/@50, their means over categories, and avg."""
    runs = next(iter(scored.values()))["rows"]
    rows = {run: summarize_categories({c: s["rows"][run] for c, s in scored.items()}, REPORTED) for run in runs}
    title = f"FashionIQ {split}: all categories"
    caption = "\n".join(s["caption"].splitlines()[0] for s in scored.values()) + f"\n{machine_description()}"
    console.print(render_report(title, rows, caption))
    return {"title": title, "rows": rows, "caption": caption, "extra": {"categories": scored}}


def describe(benchmark: Benchmark) -> dict[str, Any]:
    return {
        "name": benchmark.name,
        "split": benchmark.split,
        "release": benchmark.release,
        "category": benchmark.category,
        "protocol": benchmark.protocol,
        "queries": len(benchmark.queries),
        "gallery": len(benchmark.gallery),
    }
