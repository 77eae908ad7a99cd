"""`cir bench`: stage one at several gallery sizes, stage two as K grows, and the pipeline end to end, in one run."""

from __future__ import annotations

import argparse

from rich.markup import escape

from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure speed, memory and scaling of every stage",
        description="Stage one (exact / approximate, dense / sparse indexes) at each gallery size, stage two as the "
        "candidate count grows (cached tokens vs encoding per query), and the pipeline end to end on the synthetic "
        "benchmark. Galleries beyond the real one are drawn to match the model's real vectors.",
    )
    p.add_argument("--scale", default="10k,100k,1m", help="gallery sizes, comma-separated (e.g. 2k,10k,1m; default %(default)s)")
    p.add_argument("--k", type=int, default=10, help="results per stage-one search, and the k of recall@k (default %(default)s)")
    p.add_argument("--queries", type=int, default=100, help="real queries timed in every section (default %(default)s)")
    p.add_argument("--skip", default="", help="what to leave out, comma-separated: sections stage1, stage2, e2e; "
                   "approximate indexes ivf, hnsw, two-pass, seismic, milvus-flat, milvus-ivf, milvus-hnsw, milvus-sparse (milvus: all four)")
    p.add_argument("--candidates", default="10,50,100", help="stage-two candidate counts K (default %(default)s)")
    p.add_argument("--data", default="data/synth", help="generated synthetic benchmark (default %(default)s)")
    p.add_argument("--cache-dir", default=".cir-cache", help="gallery feature cache (default %(default)s)")
    p.add_argument("--threads", type=int, help="torch and faiss threads (default: every core); one-query latency uses 1")
    p.add_argument("--encode-images", type=int, default=2000, help="images timed for the gallery encoding rate (default %(default)s)")
    p.add_argument("--no-word-terms", action="store_true",
                   help="search the shipped sparse heads with their distilled terms alone (no word terms)")
    p.add_argument("--json", metavar="FILE", help="write every number, with how it was measured, as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown (the README's performance section)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchSettings, parse_scale, print_result, run_bench, write_result
    from ..bench.runner import parse_list, parse_skip
    from .common import check_outputs

    check_outputs([("--json", args.json, "file"), ("--markdown", args.markdown, "file"),
                   ("--cache-dir", args.cache_dir, "folder")])
    settings = BenchSettings(
        scales=tuple(parse_scale(s) for s in parse_list(args.scale)),
        k=args.k,
        queries=args.queries,
        skip=parse_skip(parse_list(args.skip)),
        rerank_depths=tuple(_whole_number(c, "--candidates") for c in parse_list(args.candidates)),
        data=args.data,
        cache_dir=args.cache_dir,
        encode_images=args.encode_images,
        word_terms=not args.no_word_terms,
    )
    if args.threads is not None:
        settings.threads = args.threads
    from ..io import write_json

    # the JSON is rewritten (atomically) after every stage-one row, so a run that fails late keeps what it measured
    result = run_bench(settings, (lambda partial: write_json(args.json, partial)) if args.json else None)
    print_result(result, console)
    for path in write_result(result, args.json, args.markdown):
        console.print(f"wrote {escape(str(path))}")
    return 0


def _whole_number(text: str, option: str) -> int:
    from ..errors import CirError

    if not text.isdigit():
        raise CirError(f"{option}: {text!r} is not a whole number")
    return int(text)
