"""`cir search`: one composed query against a configured gallery: a table of the top results and a PNG sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_options, load_config
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="search a gallery with a reference image and a modification text")
    add_config_options(p)
    p.add_argument("--reference", required=True, help="a gallery image id or an image file")
    p.add_argument("--text", required=True, help="the modification text")
    p.add_argument("-k", "--k", type=int, default=10, help="results to show (default 10)")
    p.add_argument("--gallery", type=Path, help="search this folder of images instead of the config's benchmark gallery")
    p.add_argument("--sheet", type=Path, default=Path("search.png"), help="contact sheet PNG (default search.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..experiment import build_pipeline, open_benchmark
    from .sheet import results_sheet
    from ..types import Gallery, Query, open_image

    cfg = load_config(args)
    if args.gallery:
        gallery, benchmark = Gallery.from_folder(args.gallery), None
    else:
        benchmark = open_benchmark(cfg)
        gallery = benchmark.gallery
    pipeline = build_pipeline(cfg, benchmark).index(gallery)
    pipeline.exclude_reference = True  # a search never returns its own reference
    results = pipeline.search(args.reference, args.text, k=args.k)
    explain = getattr(pipeline.retriever, "explain", None)
    table = Table(title=f"{pipeline!r}: {args.text!r}", caption=f"reference {args.reference}; gallery {gallery.name} ({len(gallery)} images)")
    for column in ("rank", "image", "score", "stage-one rank"):
        table.add_column(column, justify="right" if column != "image" else "left")
    if explain:
        table.add_column("shared terms (contribution)")
    query = Query("q", args.reference, args.text)
    for r in results:
        row = [str(r.rank), r.image_id, f"{r.score:.3f}", str(r.stage1_rank or "-")]
        if explain:
            row.append(", ".join(f"{term} {w:.2f}" for term, w in explain(query, r.image_id)))
        table.add_row(*row)
    console.print(table)
    reference = gallery.load(args.reference) if args.reference in gallery else open_image(args.reference)
    console.print(f"wrote {results_sheet(reference, args.text, results, gallery.load, args.sheet)}")
    return 0
