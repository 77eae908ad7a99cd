"""`run_bench`: every section of `cir bench` in one run, on one model and one set of real vectors, as one JSON-ready dict."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable

from tqdm import tqdm

from ..errors import CirError
from .context import open_context
from .end_to_end import bench_end_to_end
from .scaling import scaling_fits
from .stage_one import METHODS, add_ratios, bench_scale
from .stage_two import RERANK_DEPTHS, bench_stage_two
from .timing import thread_limit
from .vectors import ScaledVectors, encode_real_vectors

SECTIONS = ("stage1", "stage2", "e2e")
# the exact ones are every comparison's reference; "milvus" skips every Milvus row
SKIPPABLE_INDEXES = tuple(m.kind for m in METHODS if not m.exact) + ("milvus",)
_SCALE = re.compile(r"(\d+(?:\.\d+)?)([km]?)")
_MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_scale(text: str) -> int:
    """A gallery size written as 2000, 2k, 10k, 1.5m or 1m."""
    match = _SCALE.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) * _MULTIPLIERS[match.group(2)] < 1:
        raise CirError(f"gallery size {text!r} is not a positive number like 2000, 10k or 1m")
    return int(round(float(match.group(1)) * _MULTIPLIERS[match.group(2)]))


def parse_list(text: str) -> list[str]:
    """The items of a comma-separated option value."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_skip(names: list[str]) -> frozenset[str]:
    """Sections (stage1, stage2, e2e) and approximate stage-one indexes (ivf, hnsw, two-pass, seismic, milvus-...,
    or milvus for all of Milvus's) to leave out."""
    known = SECTIONS + SKIPPABLE_INDEXES
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise CirError(f"unknown name(s) to skip: {', '.join(unknown)} (known: {', '.join(known)})")
    return frozenset(names)


@dataclass
class BenchSettings:
    """What `cir bench` measures and how: gallery sizes, k, queries, sections to skip, data, threads."""

    scales: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    k: int = 10
    queries: int = 100
    skip: frozenset[str] = frozenset()
    data: str = "data/synth"
    cache_dir: str = ".cir-cache"
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    rerank_depths: tuple[int, ...] = RERANK_DEPTHS
    encode_images: int = 2000
    seed: int = 0
    word_terms: bool = True  # false: the shipped sparse heads' distilled terms alone (cir.stages.sparse_words)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skip": sorted(self.skip)}


def run_stage_one(vectors: ScaledVectors, settings: BenchSettings,
                  on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every stage-one row at every size; `on_row` gets the section as measured so far after each row (a long run
    that fails late keeps what it measured)."""
    rows: list[dict[str, Any]] = []

    def section(final: bool) -> dict[str, Any]:
        out = {"k": settings.k, "queries": len(vectors.real.queries), "threads": settings.threads,
               "single_query_threads": 1, "rows": rows}
        return {**out, "scaling": scaling_fits(rows)} if final else {**out, "partial": True}

    with tqdm(total=len(settings.scales) * len(METHODS), desc="stage one", unit="index", leave=False) as bar:
        for n in settings.scales:
            for row in bench_scale(vectors, n, settings.k, settings.threads, settings.skip):
                rows.append(row)
                bar.set_postfix_str(f"{row['method']} @ {n:,}")
                bar.update()
                if on_row is not None:
                    on_row(section(final=False))
    add_ratios(rows)
    return section(final=True)


def run_bench(settings: BenchSettings, on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every section not in `settings.skip`; the result holds the numbers and how they were obtained.
    `on_progress` gets the result as measured so far after each stage-one row."""
    if min(settings.queries, settings.k, settings.threads, settings.encode_images, *settings.rerank_depths) < 1:
        raise CirError("--queries, --k, --threads, --encode-images and --candidates must be at least 1")
    if not settings.scales:
        raise CirError("no gallery size given: --scale takes sizes like 10k,100k,1m")
    from ..machine import machine_description

    with thread_limit(settings.threads), open_context(settings.data, settings.cache_dir, settings.word_terms) as context:
        date = datetime.now().isoformat(timespec="seconds")
        result: dict[str, Any] = {
            "title": f"cir bench, {date}: {machine_description()}; faiss {settings.threads} threads (1 for one-query latency)",
            "date": date,
            "machine": machine_description(),
            "settings": settings.to_dict(),
            "model": context.describe(),
        }
        real = encode_real_vectors(context, settings.queries)
        if "stage1" in settings.skip:
            result["stage_one"] = {"skipped": "--skip stage1"}
        else:
            vectors = ScaledVectors(real, settings.seed)
            result["vectors"] = vectors.sources()
            progress = None if on_progress is None else lambda stage: on_progress({**result, "stage_one": stage})
            result["stage_one"] = run_stage_one(vectors, settings, progress)
        if "stage2" in settings.skip:
            result["stage_two"] = {"skipped": "--skip stage2"}
        else:
            result["stage_two"] = bench_stage_two(context, real, settings.threads, settings.rerank_depths)
        if "e2e" in settings.skip:
            result["end_to_end"] = {"skipped": "--skip e2e"}
        elif context.generated:
            result["end_to_end"] = {"skipped": f"no generated dataset at {settings.data} (`cir data synth --out {settings.data}`)"}
        else:
            result["end_to_end"] = bench_end_to_end(context, real.queries, settings.threads, settings.k, settings.encode_images)
    return result
