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
    from ..experiment import build_pipeline, open_benchmark

    cfg = load_config(args)
    check_output(cache_flag(args), cfg.cache_dir, "folder")
    prepare_synthetic(cfg, args, [cfg.benchmark.split])
    benchmark = open_benchmark(cfg)
    pipeline = build_pipeline(cfg, benchmark)
    start = time.perf_counter()
    pipeline.index(benchmark.gallery)
    seconds = time.perf_counter() - start
    for stage in pipeline.stages:
        encoded = stage.images_encoded
        state = "encodes nothing" if encoded is None else "cache hit, 0 images encoded" if encoded == 0 else f"{encoded} images encoded"
        console.print(f"{stage.describe()}: {len(benchmark.gallery)} gallery images ({state})")
    console.print(f"indexed in {seconds:.1f} s; cache at {escape(str(cfg.cache_dir))}")
    return 0
