"""Training triplets (reference, text, target): the annotations in memory, the images read batch by batch.

Images are never held for the whole split: a torch DataLoader's worker processes read, decode and preprocess each
batch's images while the previous batch trains, so memory follows the batch, not the number of training images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import CirError
from ..types import Gallery, Query

log = logging.getLogger(__name__)


@dataclass
class TripletData:
    queries: list[Query]
    ref_rows: np.ndarray  # (Q,) row of each query's reference in `image_ids`
    target_rows: np.ndarray  # (Q,) row of each query's target
    hard_rows: list[np.ndarray]  # per query: rows of near-duplicates of the target (img_set members minus ref/target)
    image_ids: list[str]  # the training images, by row
    gallery: Gallery  # where each of them lives
    preprocess: Callable  # PIL images -> (B, 3, H, W) float tensor
    variants: list[list[str]] | None = None  # per query, training texts to draw from (None: its text only)

    def __len__(self) -> int:
        return len(self.queries)

    def images(self) -> Gallery:
        """The training images as a gallery, row i being `image_ids[i]` (what the feature cache encodes)."""
        return Gallery(self.image_ids, {i: self.gallery.path(i) for i in self.image_ids}, name=f"{self.gallery.name}-train")

    def pixels(self, rows: Sequence[int]) -> torch.Tensor:
        """Preprocessed float16 pixels of the images at `rows`, read from disk now."""
        return self.preprocess([self.gallery.load(self.image_ids[int(r)]) for r in rows]).to(torch.float16)


def load_triplets(benchmark, preprocess, max_queries: int | None = None) -> TripletData:
    """A benchmark split with targets as training triplets (annotations only; no image is read here)."""
    if benchmark.targets is None:
        raise CirError(f"{benchmark.label} has no targets to train on")
    queries = benchmark.queries[:max_queries] if max_queries else list(benchmark.queries)
    subsets = benchmark.subsets or {}
    needed: dict[str, int] = {}
    for q in queries:
        for image_id in (q.reference, benchmark.targets[q.id][0], *subsets.get(q.id, ())):
            needed.setdefault(image_id, len(needed))
    target_ids = [benchmark.targets[q.id][0] for q in queries]
    return TripletData(
        queries=queries,
        ref_rows=np.array([needed[q.reference] for q in queries], dtype=np.int64),
        target_rows=np.array([needed[t] for t in target_ids], dtype=np.int64),
        hard_rows=[
            np.array([needed[m] for m in subsets.get(q.id, ()) if m not in (q.reference, t)], dtype=np.int64)
            for q, t in zip(queries, target_ids)
        ],
        image_ids=list(needed),
        gallery=benchmark.gallery,
        preprocess=preprocess,
        variants=[benchmark.text_variants[q.id] for q in queries] if benchmark.text_variants else None,
    )


class _BatchImages(torch.utils.data.Dataset):
    """Item i: batch i's query indices and the pixels of the image rows `rows_of` names for it."""

    def __init__(self, data: TripletData, batches: list[np.ndarray], rows_of: Callable[[np.ndarray], np.ndarray]):
        self.data, self.batches, self.rows_of = data, batches, rows_of

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[np.ndarray, torch.Tensor]:
        idx = self.batches[i]
        return idx, self.data.pixels(self.rows_of(idx))


def image_batches(
    data: TripletData, batches: list[np.ndarray], rows_of: Callable[[np.ndarray], np.ndarray], workers: int = 0
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(query indices, pixels) per batch, the images read by `workers` DataLoader processes (0: in this one)."""
    loader = torch.utils.data.DataLoader(
        _BatchImages(data, batches, rows_of), batch_size=None, shuffle=False, num_workers=workers,
        prefetch_factor=2 if workers else None, collate_fn=lambda item: item,
    )
    yield from loader


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
    """What the stage tasks share: shuffled batches over the first `train_count` triplets, a validation subset.

    With several processes (DistributedDataParallel), every rank draws the same permutation and takes its own
    `batch_size` slice of each global batch of `batch_size * world` queries: the ranks' shards never overlap, and
    together they see what one process with the whole batch would.
    """

    rank, world = 0, 1  # set by the training loop under torch.distributed
    device = torch.device("cpu")  # where the loss is computed; set by the training loop

    def __init__(self, model, data: TripletData, val_benchmark=None, val_queries: int | None = 1000) -> None:
        self.model = model
        self.data = data
        self.train_count = len(data)
        self.val_benchmark = first_queries(val_benchmark, val_queries) if val_benchmark is not None else None

    def num_batches(self, batch_size: int) -> int:
        return self.train_count // (batch_size * self.world)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """`values` of every rank, concatenated in rank order, gradients flowing back to each (one process: as is)."""
        if self.world == 1:
            return values
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(values.contiguous()))

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Image rows of every rank's shard, in rank order."""
        if self.world == 1:
            return rows
        import torch.distributed as dist

        local = torch.from_numpy(np.ascontiguousarray(rows)).to(self.device)
        shards = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(shards, local)
        return torch.cat(shards).cpu().numpy()

    def query_batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        order = rng.permutation(self.train_count)
        step = batch_size * self.world
        for start in range(0, self.num_batches(batch_size) * step, step):
            yield order[start + self.rank * batch_size : start + (self.rank + 1) * batch_size]
