"""A configured experiment: the benchmark, the model and the pipeline a Config describes, and their evaluation."""

from __future__ import annotations

import logging
from pathlib import Path
import time
from dataclasses import dataclass, field

from .config import Config
from .eval import evaluate as score_run
from .pipeline import Pipeline
from .types import Ranking, Run

log = logging.getLogger(__name__)


def open_benchmark(cfg: Config, split: str | None = None):
    from .data import load_benchmark

    b = cfg.benchmark
    return load_benchmark(
        b.name, b.root, split or b.split, category=b.category, release=b.release, image_root=b.image_root,
        exclude_reference=b.exclude_reference,
    )


def build_pipeline(cfg: Config, benchmark=None, model=None) -> Pipeline:
    """`Pipeline.from_config`, with stage one's cut-off and the reference rule of the benchmark being evaluated."""
    pipeline = Pipeline.from_config(cfg, model=model, top_k=benchmark.top_k if benchmark is not None else None)
    if benchmark is not None:
        pipeline.exclude_reference = benchmark.exclude_reference
    return pipeline


@dataclass
class Evaluation:
    """What `cir eval` reports: metrics per stage (with ms/query), the runs, and what indexing cost."""

    benchmark: object
    runs: dict[str, Run]
    stages: dict[str, str]  # run name -> what it is ("stage 1 (dense, flat)", "stage 1 + 2 (dual-encoder)", ...)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    images_encoded: int = 0
    index_seconds: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)  # a sparse stage one's term metrics (synthetic benchmark)


def run_for_file(run: Run, benchmark, depth: int = 100) -> Run:
    """A full-depth run cut to `depth`, each query's subset members appended in their ranked order, so that
    re-scoring the file (`cir score`) gives exactly the metrics computed on the full run."""
    subsets = benchmark.subsets or {}
    out = Run(name=run.name)
    for qid, ranking in run.items():
        head = ranking.top(depth)
        members = set(subsets.get(qid, ())) - set(head.ids)
        tail = [(i, s) for i, s in zip(ranking.ids[depth:], ranking.scores[depth:]) if i in members]
        out[qid] = Ranking(qid, head.ids + [i for i, _ in tail], head.scores + [s for _, s in tail])
    return out


def evaluate(cfg: Config, split: str | None = None, model=None) -> Evaluation:
    """Index the config's benchmark gallery, run every stage over its queries at full depth, score each stage."""
    benchmark = open_benchmark(cfg, split)
    pipeline = build_pipeline(cfg, benchmark, model)
    start = time.perf_counter()
    pipeline.index(benchmark.gallery)
    index_seconds = time.perf_counter() - start
    runs = pipeline.run(benchmark.queries, pipeline.k, depth=len(benchmark.gallery))
    result = Evaluation(benchmark, runs, pipeline.describe(), images_encoded=pipeline.images_encoded,
                        index_seconds=index_seconds)
    if benchmark.targets is not None:
        for stage, run in runs.items():
            result.metrics[stage] = {**score_run(benchmark, run), "ms/query": pipeline.times.ms_per_query(stage)}
        result.terms = sparse_term_metrics(cfg, benchmark, pipeline.retriever, runs["stage1"])
    return result


def sparse_term_metrics(cfg: Config, benchmark, retriever, run: Run) -> dict[str, float]:
    """Whether a sparse stage one's terms mean their words (`cir.eval.term_metrics`), where the benchmark says what
    every image shows: cir's synthetic one, with what the terms cost. Empty for a dense stage one or another
    benchmark."""
    from .data.synth.layout import read_own_metadata

    if getattr(retriever, "image_vectors", None) is None or read_own_metadata(Path(cfg.benchmark.root)) is None:
        return {}
    from .data.synth.words import term_truth
    from .eval.term_metrics import term_metrics
    from .index.sparse import expected_flops

    queries, images = retriever.encode_queries(benchmark.queries), retriever.image_vectors
    metrics = term_metrics(
        retriever.model.tokenizer, retriever.encoder.features.ids, images, benchmark.queries, queries,
        benchmark.targets, run, **term_truth(cfg.benchmark.root, benchmark.split),
    )
    # what the terms cost, on the same vectors: terms per vector, expected multiply-adds per query-image pair
    return {**metrics, "query_terms": float(queries.getnnz(1).mean()), "image_terms": float(images.getnnz(1).mean()),
            "flops_per_pair": expected_flops(queries, images)}
