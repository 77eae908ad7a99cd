"""The whole pipeline on the synthetic benchmark: per-query latency of stage one + stage two, memory, and how fast
a gallery is encoded.

Each pipeline (dense stage one, and sparse when a trained sparse head exists, each cut to the benchmark's K and
reranked by stage two) serves the queries one at a time from the feature cache. Python allocations are traced
(tracemalloc) over indexing and a few queries, apart from the timed pass, since tracing slows allocation down.
Gallery encoding is timed into a fresh temporary cache.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from ..cache import FeatureCache
from ..pipeline import Pipeline
from ..stages.encoding import TowerEncoder
from ..stages.rerank import DualEncoderReranker, reranker_tower
from ..types import Gallery, Query
from .context import BenchContext
from ..machine import peak_rss_bytes
from .timing import latency_summary, thread_limit, timed

TRACED_QUERIES = 5


def encoding_rate(context: BenchContext, images: int, threads: int) -> dict[str, Any]:
    """Images per second through every image tower the pipeline caches, into a fresh temporary cache."""
    gallery = context.benchmark.gallery
    ids = gallery.ids[:images]
    subset = Gallery(ids, {i: gallery.path(i) for i in ids}, name=f"{gallery.name}-first-{len(ids)}")
    towers = sorted({"stage1", reranker_tower(context.model)})
    with tempfile.TemporaryDirectory(prefix="cir-bench-encode-") as scratch, thread_limit(threads):
        cache = FeatureCache(scratch)
        seconds = sum(timed(lambda t=t: TowerEncoder(context.model, t, cache).index(subset))[0] for t in towers)
    return {"images": len(ids), "towers": towers, "seconds": seconds, "images_per_second": len(ids) / seconds,
            "what": "decode + preprocess + ViT forward + cache write"}


def build_pipelines(context: BenchContext) -> dict[str, Pipeline]:
    """Dense stage one (and sparse, given a trained head) % the benchmark's K >> the dual-encoder reranker."""
    from ..stages.dense import DenseRetriever
    from ..stages.sparse import SparseRetriever

    weight = None if context.trained else 0.0  # None: the shipped tag's calibrated weight, which the model carries
    reranker = DualEncoderReranker(context.model, context.cache, weight)
    retrievers = {"dense flat": DenseRetriever(context.model, context.cache)}
    if context.sparse is not None:
        retrievers["sparse csr"] = SparseRetriever(context.model, context.cache, sparse_head=context.sparse)
    pipelines = {}
    for name, retriever in retrievers.items():
        pipeline = retriever % context.benchmark.top_k >> reranker
        pipeline.exclude_reference = context.benchmark.exclude_reference
        pipelines[f"{name} % {pipeline.k} >> {reranker.name}"] = pipeline
    return pipelines


def _python_peak_bytes(pipeline: Pipeline, gallery: Gallery, queries: Sequence[Query], k: int) -> int:
    """Peak traced Python allocations (numpy included, torch's own allocator not) over indexing and a few queries."""
    tracemalloc.start()
    try:
        pipeline.index(gallery)
        for query in queries[:TRACED_QUERIES]:
            pipeline.run([query], k)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def time_pipeline(pipeline: Pipeline, queries: Sequence[Query], k: int) -> dict[str, Any]:
    """Per-query stage-one, stage-two and total milliseconds (p50 / p95), one query at a time after a warm-up."""
    pipeline.run([queries[0]], k)
    stage1, stage2 = np.empty(len(queries)), np.empty(len(queries))
    for i, query in enumerate(queries):
        pipeline.run([query], k)
        stage1[i], stage2[i] = pipeline.times.seconds["stage1"], pipeline.times.seconds.get("stage2", 0.0)
    return {**latency_summary(stage1, "stage1_"), **latency_summary(stage2, "stage2_"), **latency_summary(stage1 + stage2, "total_")}


def bench_end_to_end(context: BenchContext, queries: Sequence[Query], threads: int, k: int, encode_images: int) -> dict[str, Any]:
    """Latency per query of each pipeline, peak memory, and the gallery encoding rate."""
    gallery = context.benchmark.gallery
    rows = []
    with thread_limit(threads):
        for name, pipeline in tqdm(build_pipelines(context).items(), desc="end to end", unit="pipeline", leave=False):
            python_peak = _python_peak_bytes(pipeline, gallery, queries, k)
            index_s, _ = timed(lambda: pipeline.index(gallery))
            rows.append({"pipeline": name, "gallery": len(gallery), "index_s_cached": index_s,
                         **time_pipeline(pipeline, queries, k), "python_peak_bytes": python_peak,
                         "peak_rss_bytes": peak_rss_bytes()})
    return {"benchmark": context.benchmark.label, "queries": len(queries), "traced_queries": min(TRACED_QUERIES, len(queries)),
            "rows": rows, "encoding": encoding_rate(context, encode_images, threads)}
