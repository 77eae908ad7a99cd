"""`cir explain`: why a sparse stage one ranked what it did for chosen benchmark queries, in words.

For each query: its reference, text and target, stage one's top results with the terms each shares with the query
(their contributions add up to the score), and, when the top hit is not the target, the terms that misled it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from ..errors import CirError
from .common import add_config_options, cache_flag, check_outputs, load_config, prepare_synthetic
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="explain a sparse stage one's top results for chosen queries, in words")
    add_config_options(p)
    p.add_argument("--queries", required=True, help="comma-separated query ids of the benchmark split")
    p.add_argument("--top", type=int, default=3, help="results per query (default 3)")
    p.add_argument("--terms", type=int, default=4, help="terms shown per result (default 4)")
    p.add_argument("--markdown", type=Path, help="also write the explanations as Markdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top < 1 or args.terms < 1:
        raise CirError(f"--top {args.top} / --terms {args.terms}: both must be at least 1")
    cfg = load_config(args)
    check_outputs([("--markdown", args.markdown, "file"), (cache_flag(args), cfg.cache_dir, "folder")])
    from ..experiment import build_pipeline, open_benchmark

    prepare_synthetic(cfg, args, [cfg.benchmark.split])
    benchmark = open_benchmark(cfg)
    by_id = {q.id: q for q in benchmark.queries}
    wanted = [i.strip() for i in args.queries.split(",") if i.strip()]
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        raise CirError(f"--queries: {unknown[0]!r} is not a query of {benchmark.label} ({len(unknown)} unknown)")
    if benchmark.targets is None:
        raise CirError(f"{benchmark.label} has no targets: explanations need to know each query's correct image")
    pipeline = build_pipeline(cfg, benchmark)
    retriever = pipeline.retriever
    if not hasattr(retriever, "explain_mismatch"):
        raise CirError(f"{cfg.source}: stage one is {retriever.name!r}; cir explain needs a sparse stage one "
                       "(stage_one.kind: sparse, e.g. configs/synth-tiny-sparse.yaml)")
    pipeline.index(benchmark.gallery)
    queries = [by_id[i] for i in wanted]
    first = pipeline.run(queries, args.top, rerank=False)["stage1"]
    blocks = [explanation(retriever, q, benchmark.targets[q.id][0], first[q.id].ids, args.top, args.terms) for q in queries]
    for block in blocks:
        console.print(escape(block["text"]))
    if args.markdown:
        from ..io import write_text

        heads = cfg.stage_one.params.get("sparse_head") or f"the heads of pretrained tag {cfg.model.pretrained!r}"
        if cfg.stage_one.params.get("word_terms") is False:
            heads += ", distilled terms only (word_terms: false)"
        caption = (f"{benchmark.label}, {pipeline.describe()['stage1']}; model {cfg.model.name} ({cfg.model.pretrained}), "
                   f"sparse heads: {heads}")
        write_text(args.markdown, markdown(blocks, caption))
        console.print(f"wrote {escape(str(args.markdown))}")
    return 0


def _terms(pairs) -> str:
    return ", ".join(f"{word} {weight:.2f}" for word, weight in pairs) or "(no shared term)"


def explanation(retriever, query, target: str, ranked: list[str], top: int, terms: int) -> dict:
    """One query's explanation: its results with their terms, and what misled a wrong top hit."""
    results = retriever.explain_many(query, ranked[:top], terms)
    rank = ranked.index(target) + 1 if target in ranked else None
    misled = retriever.explain_mismatch(query, ranked[0], target) if ranked and ranked[0] != target else []
    rows = [(i + 1, image_id, image_id == target, results[image_id]) for i, image_id in enumerate(ranked[:top])]
    lines = [f"query {query.id}: {query.reference} + {query.text!r} -> {target}"]
    lines += [f"  {r}. {image_id}{' (target)' if hit else ''}: {_terms(t)}" for r, image_id, hit, t in rows]
    if misled:
        where = f"rank {rank}" if rank else f"not in the top {len(ranked)}"
        lines.append(f"  the top hit outscored the target ({where}) on: {_terms(misled)}")
    return {"query": query, "target": target, "rows": rows, "misled": misled, "text": "\n".join(lines)}


def markdown(blocks: list[dict], caption: str) -> str:
    """The explanations as one Markdown table: query, then one cell per result."""
    width = max(len(b["rows"]) for b in blocks)
    head = "| query (reference + text) | " + " | ".join(f"stage-one result {i + 1}: its terms" for i in range(width))
    lines = [f"*{caption}*", "", head + " |", "|" + " --- |" * (width + 1)]
    for b in blocks:
        q = b["query"]
        cells = [f"**{q.id}** `{q.reference}` + “{q.text}”"]
        for _, image_id, hit, terms in b["rows"]:
            mark = " ✔ target" if hit else ""
            cells.append(f"`{image_id}`{mark}: {_terms(terms)}")
        if b["misled"]:
            cells[-1] += f"<br>misled by: {_terms(b['misled'][:2])}"
        lines.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
