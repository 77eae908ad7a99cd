"""`cir score`: judge run files on a benchmark split; several runs are compared with a paired significance test."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import BENCHMARK_NAMES, FASHIONIQ_CATEGORIES, Benchmark, load_benchmark, load_fashioniq_categories
from ..data.fashioniq import REPORTED
from ..errors import CirError
from ..eval.metrics import summarize_categories
from ..eval.report import Report, write_per_query
from ..eval.significance import CORRECTIONS, TESTS
from ..eval.validate import warn_if_misordered
from ..machine import machine_description
from ..types import Run
from .console import console

CATEGORY_FIELD = "{category}"
TABLE_FLAGS = ("json", "csv", "latex", "markdown")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score run files on a benchmark split",
        description="Score run files ({\"query id\": [[\"image id\", score], ...]}, best first) on a benchmark split. "
        "Several runs are compared side by side with a paired significance test per metric.",
    )
    parser.add_argument("benchmark", choices=BENCHMARK_NAMES)
    parser.add_argument(
        "--run", nargs="+", required=True, metavar="FILE",
        help=f"run file(s); for FashionIQ without --category, a path containing {CATEGORY_FIELD}",
    )
    add_benchmark_options(parser)
    add_comparison_options(parser)
    parser.add_argument("--json", metavar="FILE", help="write every metric, in percent, as JSON")
    parser.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    parser.add_argument("--latex", metavar="FILE", help="write the table as a LaTeX fragment (booktabs)")
    parser.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    parser.add_argument(
        "--per-query", metavar="FILE",
        help="write one row per query (.parquet or .csv): ids, text, target, the target's rank in each run, and what "
        "the benchmark knows of the query (FashionIQ category; synthetic edit type)",
    )
    parser.add_argument(
        "--by", metavar="FIELD",
        help="also the metrics per group of queries (a field of the per-query table: edit, compound, category, ...), "
        "with the group sizes and a first group 'all'; the table files then hold this breakdown",
    )
    parser.set_defaults(func=score)


def add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    """Which split scores the runs, and under which reference rule (shared by `cir score` and `cir report`)."""
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--root", metavar="DIR", help="the benchmark's annotation folder")
    parser.add_argument("--category", choices=FASHIONIQ_CATEGORIES, help="FashionIQ category (default: all three)")
    parser.add_argument("--release", help="CIRR release (default: the only one in --root)")
    parser.add_argument(
        "--exclude-reference", action=argparse.BooleanOptionalAction, default=None,
        help="drop (or, with --no-exclude-reference, keep) each query's reference image before scoring; default: the "
        "benchmark's official rule (CIRR drops it, FashionIQ and CIRCO keep it). A departure is not the official "
        "protocol, and the caption says so",
    )


def add_comparison_options(parser: argparse.ArgumentParser) -> None:
    """The significance options (shared by `cir score` and `cir report`)."""
    parser.add_argument("--test", choices=TESTS, default="t-test", help="paired significance test (several runs)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument(
        "--correction", choices=CORRECTIONS, default="none",
        help="multiple-comparison correction: holm adjusts the p-values per metric over every pair of runs (and, "
        "with --by, every group) with Holm's step-down method; default none",
    )


def score(args: argparse.Namespace) -> int:
    from .common import check_outputs

    check_outputs([(f"--{flag}", getattr(args, flag), "file") for flag in TABLE_FLAGS]
                  + [("--per-query", args.per_query, "file")])
    if args.per_query and Path(args.per_query).suffix not in (".parquet", ".csv"):
        raise CirError(f"--per-query {args.per_query}: give a .parquet or .csv file")
    report = build_report(args.run, args)
    console.print(report.table())
    if args.by:
        report = report.breakdown(args.by, args.correction)
        console.print(report.table())
    for flag in TABLE_FLAGS:
        if getattr(args, flag):
            report.write(getattr(args, flag))
    if args.per_query:
        write_per_query(report.per_query(), args.per_query)
    return 0


def build_report(paths: list[str], args: argparse.Namespace) -> Report:
    """The report of the run files `paths` on the split the arguments name. FashionIQ without --category: the
    literature's all-categories table (its per-query table and breakdowns span the three categories)."""
    if args.benchmark == "fashioniq" and args.category is None:
        if not all(CATEGORY_FIELD in path for path in paths):
            raise CirError(
                f"FashionIQ without --category scores all three categories: give run paths containing "
                f"{CATEGORY_FIELD} (e.g. runs/fiq.{CATEGORY_FIELD}.json), or pass --category"
            )
        benchmarks = load_fashioniq_categories(args.root, args.split, exclude_reference=args.exclude_reference)
        return summarize_fashioniq({k: split_report(b, load_runs(paths, b.category), args) for k, b in benchmarks.items()},
                                   args.split)
    benchmark = load_benchmark(
        args.benchmark, args.root, args.split, category=args.category, release=args.release,
        exclude_reference=args.exclude_reference,
    )
    return split_report(benchmark, load_runs(paths, benchmark.category), args)


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


def split_report(benchmark: Benchmark, runs: dict[str, Run], args: argparse.Namespace) -> Report:
    """The report of one split; several runs are compared with the test, level and correction the arguments give."""
    return Report.from_runs(benchmark, runs, alpha=args.alpha, test=args.test, correction=args.correction,
                            root=args.root)


def summarize_fashioniq(scored: dict[str, Report], split: str) -> Report:
    """The literature's FashionIQ table: per-category Recall@10/@50, their means over categories, and avg; each
    category's own report (with its significance test) is a JSON section, and breakdowns test as they did."""
    first = next(iter(scored.values()))
    rows = {run: summarize_categories({c: r.rows[run] for c, r in scored.items()}, REPORTED) for run in first.rows}
    caption = "\n".join(r.caption.splitlines()[0] for r in scored.values()) + f"\n{machine_description()}"
    report = Report.from_rows(f"FashionIQ {split}: all categories", rows, caption,
                              categories={c: r.to_dict() for c, r in scored.items()})
    report.sources = [source for r in scored.values() for source in r.sources]
    report.settings = first.settings
    return report
