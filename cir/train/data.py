"""Training triplets (reference, text, target) with every image preprocessed once and held in memory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from ..types import Query

log = logging.getLogger(__name__)


@dataclass
class TripletData:
    queries: list[Query]
    ref_rows: np.ndarray  # (Q,) row of each query's reference in `pixels`
    target_rows: np.ndarray  # (Q,) row of each query's target
    hard_rows: list[np.ndarray]  # per query: rows of near-duplicates of the target (img_set members minus ref/target)
    pixels: torch.Tensor  # (N, 3, H, W) float16, preprocessed
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.queries)


def load_triplets(benchmark, preprocess, max_queries: int | None = None, batch_size: int = 256) -> TripletData:
    """Read a benchmark split with targets into memory (images preprocessed once, stored fp16)."""
    from tqdm.auto import tqdm

    if benchmark.targets is None:
        raise ValueError(f"{benchmark.name} {benchmark.split} has no targets to train on")
    queries = benchmark.queries[:max_queries] if max_queries else list(benchmark.queries)
    subsets = benchmark.subsets or {}
    needed: dict[str, int] = {}
    for q in queries:
        for image_id in (q.reference, benchmark.targets[q.id][0], *subsets.get(q.id, ())):
            needed.setdefault(image_id, len(needed))
    image_ids = list(needed)
    chunks = []
    for start in tqdm(range(0, len(image_ids), batch_size), desc="loading training images", unit="batch"):
        images = [benchmark.gallery.load(i) for i in image_ids[start : start + batch_size]]
        chunks.append(preprocess(images).to(torch.float16))
    target_ids = [benchmark.targets[q.id][0] for q in queries]
    return TripletData(
        queries=queries,
        ref_rows=np.array([needed[q.reference] for q in queries]),
        target_rows=np.array([needed[t] for t in target_ids]),
        hard_rows=[
            np.array([needed[m] for m in subsets.get(q.id, ()) if m not in (q.reference, t)], dtype=np.int64)
            for q, t in zip(queries, target_ids)
        ],
        pixels=torch.cat(chunks),
        image_ids=image_ids,
    )


def first_queries(benchmark, n: int | None):
    """The first n queries of a benchmark (same gallery), for a quick per-epoch validation."""
    if n is None or n >= len(benchmark.queries):
        return benchmark
    queries = benchmark.queries[:n]
    keep = {q.id for q in queries}

    def pick(mapping):
        return None if mapping is None else {k: v for k, v in mapping.items() if k in keep}

    return replace(benchmark, queries=queries, targets=pick(benchmark.targets), subsets=pick(benchmark.subsets))


class TripletTask:
    """What the stage tasks share: shuffled batches over the first `train_count` triplets, a validation subset."""

    def __init__(self, model, data: TripletData, val_benchmark=None, val_queries: int | None = 1000) -> None:
        self.model = model
        self.data = data
        self.train_count = len(data)
        self.val_benchmark = first_queries(val_benchmark, val_queries) if val_benchmark is not None else None

    def num_batches(self, batch_size: int) -> int:
        return self.train_count // batch_size

    def query_batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        order = rng.permutation(self.train_count)
        for start in range(0, self.num_batches(batch_size) * batch_size, batch_size):
            yield order[start : start + batch_size]
