"""`cir report`: one folder with everything a paper or an error analysis needs from a few run files.

Tables (LaTeX, Markdown, CSV, JSON) of the runs and of each breakdown, the per-query table (CSV), the figures
(PNG and SVG) and one static HTML page holding them (the SVGs inline: no network, no CDN).
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

from rich.markup import escape

from ..errors import CirError
from ..io import atomic_directory, write_text
from .console import console
from .score import add_benchmark_options, add_comparison_options, build_report

TABLE_SUFFIXES = (".tex", ".md", ".csv", ".json")
PAGE_STYLE = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-variant-numeric:tabular-nums}
th,td{padding:.2rem .6rem;text-align:right;border-bottom:1px solid #ddd}th:first-child,th:nth-child(2){text-align:left}
thead th{border-bottom:2px solid #444}tr.group th,tr.group td{border-top:2px solid #999}
caption{font-weight:bold;text-align:left;margin-bottom:.3rem}.caption,.files{color:#555;font-size:.85rem}
figure{margin:1.5rem 0}figure svg{max-width:100%;height:auto}"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="tables, per-query results, figures and an HTML page from run files",
        description="Score run files on a benchmark split and write a report folder: the table of the runs "
        "(with paired significance tests when several), breakdowns by what the benchmark knows of its queries, the "
        "per-query table, Recall@K curves, the stage one -> stage two rank shift of the target (runs given in stage "
        "order), bars per group, and index.html holding them all.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run files, in stage order (e.g. run.stage1.json run.stage2.json)")
    parser.add_argument("--benchmark", required=True, choices=("cirr", "fashioniq", "circo"))
    add_benchmark_options(parser)
    add_comparison_options(parser)
    parser.add_argument(
        "--by", nargs="*", metavar="FIELD",
        help="breakdowns (fields of the per-query table); default: every field the benchmark knows with 2+ values",
    )
    parser.add_argument("--metric", help="the metric of the bar charts (default: the benchmark's headline, else its first)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the report folder (replaced whole)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.plots import plot_all
    from ..eval.queries import query_fields
    from .common import check_outputs

    check_outputs([("--out", args.out, "folder")])
    report = build_report(args.runs, args)
    table = report.per_query()
    fields = query_fields(table)
    wanted = args.by if args.by is not None else [f for f in fields if table[f].astype(str).nunique() > 1]
    unknown = [f for f in wanted if f not in fields]
    if unknown:
        raise CirError(f"--by {unknown[0]}: not a field of {report.title}'s queries (known: {', '.join(fields) or 'none'})")
    metrics = list(report.sources[0].scores[report.run_names[0]])
    metric = args.metric or ("avg" if "avg" in metrics else metrics[0])
    if metric not in metrics:
        raise CirError(f"--metric {metric}: not a metric of {report.title} (known: {', '.join(metrics)})")
    breakdowns = [report.breakdown(by, args.correction) for by in wanted]
    console.print(report.table())
    for breakdown in breakdowns:
        console.print(breakdown.table())
    with atomic_directory(args.out) as out:
        for name, r in [("table", report)] + [(f"by_{b.by}", b) for b in breakdowns]:
            for suffix in TABLE_SUFFIXES:
                r.write(out / f"{name}{suffix}")
        table.to_csv(out / "per_query.csv", index=False, lineterminator="\n")
        figures = plot_all(report, breakdowns, metric, out, table)
        write_text(out / "index.html", page(report, breakdowns, figures, out))
    console.print(f"wrote {escape(str(args.out))}/ (index.html, tables, per_query.csv, {len(figures)} figures)")
    return 0


def page(report, breakdowns, figures: dict[str, list[Path]], out: Path) -> str:
    """The static page: title, tables, figures (SVG inline), links to every file."""
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(report.title)}</title>",
             f"<style>{PAGE_STYLE}</style></head><body>", f"<h1>{html.escape(report.title)}</h1>", report.to_html()]
    for breakdown in breakdowns:
        parts += [f"<h2>By {html.escape(breakdown.by)}</h2>", breakdown.to_html()]
    parts.append("<h2>Figures</h2>")
    for name, paths in figures.items():
        svg = next(p for p in paths if p.suffix == ".svg")
        inline = svg.read_text(encoding="utf-8")
        inline = inline[inline.index("<svg"):]
        links = " ".join(f'<a href="{html.escape(p.name)}">{p.suffix[1:].upper()}</a>' for p in paths)
        parts.append(f"<figure>{inline}<figcaption class=\"files\">{html.escape(name)}: {links}</figcaption></figure>")
    files = sorted(p.name for p in out.iterdir() if p.name != "index.html")
    parts.append("<h2>Files</h2><p class=\"files\">" + " ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in files) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
