"""`cir index --config FILE`: encode the benchmark gallery into the feature cache (a no-op when it is current)."""

from __future__ import annotations

import argparse
import time

from rich.markup import escape

from .common import add_config_options, cache_flag, check_output, load_config, prepare_synthetic
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="build the gallery feature cache and stage-one index")
    add_config_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiment import build_pipeline, load_model, open_benchmark

    cfg = load_config(args)
    check_output(cache_flag(args), cfg.cache_dir, "folder")
    prepare_synthetic(cfg, args, [cfg.benchmark.split])
    benchmark = open_benchmark(cfg)
    pipeline = build_pipeline(cfg, load_model(cfg), benchmark.top_k)
    start = time.perf_counter()
    pipeline.index(benchmark.gallery)
    seconds = time.perf_counter() - start
    stages = [pipeline.retriever] + ([pipeline.reranker] if pipeline.reranker else [])
    for stage in stages:
        features = stage.encoder.features
        state = "cache hit, 0 images encoded" if features.encoded == 0 else f"{features.encoded} images encoded"
        console.print(f"{stage.name}: {len(features.ids)} gallery images ({state}) key {stage.encoder.key}")
    console.print(f"indexed in {seconds:.1f} s; cache at {escape(str(cfg.cache_dir))}")
    return 0
