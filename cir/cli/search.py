"""`cir search`: one composed query against a configured gallery: a table of the top results and a PNG sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from ..errors import CirError
from .common import add_config_options, cache_flag, check_outputs, load_config, prepare_synthetic
from .console import console



def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="search a gallery with a reference image and a modification text")
    add_config_options(p)
    p.add_argument("--reference", required=True, help="a gallery image id or an image file")
    p.add_argument("--text", required=True, help="the modification text")
    p.add_argument("-k", "--k", type=int, default=10,
                   help="results to show, at least 1 (default 10; more than the gallery holds shows the whole gallery)")
    p.add_argument("--gallery", type=Path, help="search this folder of images instead of the config's benchmark gallery")
    p.add_argument("--target", help="the image you meant to find: with a sparse stage one, a wrong top hit is "
                   "explained by the terms that made it outscore this one")
    p.add_argument("--sheet", type=Path, default=Path("search.png"), help="contact sheet PNG (default search.png)")
    p.set_defaults(func=run)


def check_query(k: int, text: str) -> None:
    """Refuse, before any model loads, a result count below 1 and a blank modification text."""
    if k < 1:
        raise CirError(f"-k {k}: the number of results must be at least 1")
    if not text.strip():
        raise CirError("--text is blank: give the modification to apply to the reference (e.g. --text 'make it red')")


def capped_k(k: int, gallery_size: int) -> int:
    """`k`, or the gallery's size when it asks for more (said in a note): every image is then shown, ranked."""
    if k > gallery_size:
        console.print(f"[dim]note: -k {k} is more than the gallery's {gallery_size} images; showing all of them[/]")
        return gallery_size
    return k


def results_table(title: str, caption: str, rows: list[list[str]], explained: bool):
    """The results table; every cell is escaped, since ids, texts and terms like "[unused416]" would read as markup."""
    from rich.table import Table

    table = Table(title=escape(title), caption=escape(caption))
    for column in ("rank", "image", "score", "stage-one rank"):
        table.add_column(column, justify="right" if column != "image" else "left")
    if explained:
        table.add_column("shared terms (contribution)")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def explain_miss(retriever, query, top_hit: str, target: str, gallery) -> None:
    """Say where `target` stands and, when another image beat it, which terms (words) misled stage one."""
    if target not in gallery:
        raise CirError(f"--target {target!r} is not an image of the gallery {gallery.name}")
    if top_hit == target:
        console.print(f"the top hit is the target {escape(target)}")
        return
    mismatch = getattr(retriever, "explain_mismatch", None)
    if mismatch is None:
        console.print(f"the top hit {escape(top_hit)} is not the target {escape(target)} (a dense stage one has no terms to say why)")
        return
    terms = ", ".join(f"{t} +{w:.2f}" for t, w in mismatch(query, top_hit, target)) or "no shared term"
    console.print(f"the top hit {escape(top_hit)} outscored the target {escape(target)} in stage one on: {escape(terms)}")


def run(args: argparse.Namespace) -> int:
    check_query(args.k, args.text)
    cfg = load_config(args)
    check_outputs([("--sheet", args.sheet, "file"), (cache_flag(args), cfg.cache_dir, "folder")])

    from ..experiment import build_pipeline, open_benchmark
    from ..types import Gallery, Query, open_image
    from .sheet import results_sheet

    if args.gallery:
        gallery, benchmark = Gallery.from_folder(args.gallery), None
    else:
        prepare_synthetic(cfg, args, [cfg.benchmark.split])
        benchmark = open_benchmark(cfg)
        gallery = benchmark.gallery
    k = capped_k(args.k, len(gallery))
    pipeline = build_pipeline(cfg, benchmark).index(gallery)
    pipeline.exclude_reference = True  # a search never returns its own reference
    results = pipeline.search(args.reference, args.text, k=k)
    explain = getattr(pipeline.retriever, "explain", None)
    query = Query("q", args.reference, args.text)
    rows = []
    for r in results:
        row = [str(r.rank), r.image_id, f"{r.score:.3f}", str(r.stage1_rank or "-")]
        if explain:
            row.append(", ".join(f"{term} {w:.2f}" for term, w in explain(query, r.image_id)))
        rows.append(row)
    caption = f"reference {args.reference}; gallery {gallery.name} ({len(gallery)} images)"
    console.print(results_table(f"{pipeline!r}: {args.text!r}", caption, rows, explain is not None))
    if args.target:
        explain_miss(pipeline.retriever, query, results[0].image_id, args.target, gallery)
    reference = gallery.load(args.reference) if args.reference in gallery else open_image(args.reference)
    sheet = results_sheet(reference, args.text, results, gallery.load, args.sheet)
    console.print(f"wrote {escape(str(sheet))}")
    return 0
