"""Stage interfaces and their composition: `retriever % 50 >> reranker` reads like the idea.

A stage-one `Retriever` indexes a gallery and returns a Run for a batch of queries; a stage-two `Reranker` reorders
the top of a Run. A `Pipeline` chains them with a cut-off and offers the single-query conveniences an engineer wants.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

from .types import Gallery, Query, Ranking, Run


@dataclass
class Result:
    """One ranked image: the same type whatever stages produced it."""

    image_id: str
    score: float
    rank: int
    stage1_rank: int | None = None
    stage1_score: float | None = None


@dataclass
class StageTimes:
    """Wall-clock seconds spent per stage over the last call, and how many queries they served."""

    seconds: dict[str, float] = field(default_factory=dict)
    queries: int = 0

    def ms_per_query(self, stage: str) -> float:
        return 1000.0 * self.seconds.get(stage, 0.0) / max(self.queries, 1)


class Retriever:
    """Stage one: `index(gallery)` once, then `search(queries, k) -> Run`."""

    name = "retriever"

    def index(self, gallery: Gallery) -> None:
        raise NotImplementedError

    def search(self, queries: Sequence[Query], k: int) -> Run:
        raise NotImplementedError

    def __mod__(self, k: int) -> "Pipeline":
        return Pipeline(self, None, k)

    def __rshift__(self, reranker: "Reranker") -> "Pipeline":
        return Pipeline(self, reranker)


class Reranker:
    """Stage two: `rerank(queries, run, k) -> Run`, reordering each query's first k candidates."""

    name = "reranker"

    def index(self, gallery: Gallery) -> None:
        raise NotImplementedError

    def rerank(self, queries: Sequence[Query], run: Run, k: int | None = None) -> Run:
        raise NotImplementedError


class Pipeline:
    """Stage one, an optional stage two, and the cut-off K between them.

    `exclude_reference` drops a query's own reference image from its results (CIRR's rule, and what a catalogue
    search wants); the FashionIQ and CIRCO protocols keep it.
    """

    def __init__(
        self, retriever: Retriever, reranker: Reranker | None = None, k: int = 50, exclude_reference: bool = True
    ) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.k = k
        self.exclude_reference = exclude_reference
        self.gallery: Gallery | None = None
        self.times = StageTimes()

    def __rshift__(self, reranker: Reranker) -> "Pipeline":
        return Pipeline(self.retriever, reranker, self.k, self.exclude_reference)

    def __repr__(self) -> str:
        second = f" >> {self.reranker.name}" if self.reranker else ""
        return f"Pipeline({self.retriever.name} % {self.k}{second})"

    @classmethod
    def from_pretrained(cls, name: str = "blip-tiny-synth", **kwargs) -> "Pipeline":
        """A pipeline of the named pretrained model: dense stage one, dual-encoder stage two, K = 50."""
        from .models.pretrained import build_pipeline

        return build_pipeline(name, **kwargs)

    def index(self, gallery: Gallery | str | os.PathLike | Sequence[str | os.PathLike]) -> "Pipeline":
        """Index a Gallery, a folder of images, or a list of image paths (ids are file stems)."""
        if not isinstance(gallery, Gallery):
            if isinstance(gallery, (str, os.PathLike)):
                gallery = Gallery.from_folder(gallery)
            else:
                gallery = Gallery.from_paths(list(gallery))
        self.gallery = gallery
        self.retriever.index(gallery)
        if self.reranker is not None:
            self.reranker.index(gallery)
        return self

    def run(
        self, queries: Sequence[Query], k: int | None = None, depth: int | None = None, rerank: bool = True
    ) -> dict[str, Run]:
        """Both stages over a batch: {"stage1": Run, "stage2": Run} (stage2 only with a reranker), timed per stage.

        Stage one ranks `depth` candidates (at least k and the cut-off); stage two reorders the first `self.k` and
        keeps the rest in stage-one order, so a full-depth run still ranks every gallery image.
        """
        k = self.k if k is None else k
        depth = max(k, self.k, depth or 0)
        self.times = StageTimes(queries=len(queries))
        start = time.perf_counter()
        first = self.retriever.search(queries, depth + 1 if self.exclude_reference else depth)
        runs = {"stage1": _drop_references(first, queries, depth) if self.exclude_reference else first}
        self.times.seconds["stage1"] = time.perf_counter() - start
        if self.reranker is not None and rerank:
            start = time.perf_counter()
            runs["stage2"] = self.reranker.rerank(queries, runs["stage1"], self.k)
            self.times.seconds["stage2"] = time.perf_counter() - start
        return runs

    def search_batch(self, queries: Sequence[Query], k: int = 10) -> Run:
        runs = self.run(queries, k)
        return runs.get("stage2", runs["stage1"]).top(k)

    def search(self, reference: str | os.PathLike, text: str, k: int = 10) -> list[Result]:
        """Top-k results for one query; `reference` is a gallery id or an image path."""
        query = Query("q", str(reference), text)
        runs = self.run([query], k)
        return _results(runs.get("stage2", runs["stage1"])["q"].top(k), runs["stage1"]["q"])

    def rerank(self, reference: str | os.PathLike, text: str, candidate_ids: Sequence[str]) -> list[Result]:
        """Stage two over a candidate list from anywhere (their order is taken as the stage-one order)."""
        if self.reranker is None:
            raise ValueError("this pipeline has no stage-two reranker")
        query = Query("q", str(reference), text)
        ids = list(candidate_ids)
        first = Ranking("q", ids, [float(len(ids) - i) for i in range(len(ids))])
        reranked = self.reranker.rerank([query], Run([first]), len(ids))["q"]
        return _results(reranked, first)


def _drop_references(run: Run, queries: Sequence[Query], depth: int) -> Run:
    out = Run(name=run.name, query_states=run.query_states)
    for q in queries:
        r = run[q.id]
        keep = [i for i, image_id in enumerate(r.ids) if image_id != q.reference][:depth]
        out[q.id] = Ranking(q.id, [r.ids[i] for i in keep], [r.scores[i] for i in keep])
    return out


def _results(final: Ranking, stage1: Ranking) -> list[Result]:
    first_rank = {image_id: (i + 1, s) for i, (image_id, s) in enumerate(zip(stage1.ids, stage1.scores))}
    return [
        Result(image_id, float(score), rank + 1, *first_rank.get(image_id, (None, None)))
        for rank, (image_id, score) in enumerate(zip(final.ids, final.scores))
    ]
