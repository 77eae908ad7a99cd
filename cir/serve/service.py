"""What the server does, without HTTP: one indexed Pipeline, its gallery, an optional benchmark for ground truth.

Inference is serialised by one lock (torch and the indexes then never see two requests at once; `cir loadtest`
measures what that costs). Image ids only ever resolve to gallery entries: no request names a file.
"""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import UnknownIdError
from ..pipeline import Pipeline
from ..types import Gallery, Query, Ranking

MAX_TEXT = 500  # characters of a modification text
MAX_K = 100  # results per search
THUMBNAIL = 160  # pixels, the longer side


class RequestError(Exception):
    """A client error: HTTP `status` and a one-line message naming what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SearchRequest:
    reference: str  # a gallery id, or the path of an uploaded image (set by the server, never by a client)
    text: str
    k: int = 10
    query_id: str | None = None  # a benchmark query: its targets and img_set members are marked in the answer


class SearchService:
    """An indexed pipeline behind a lock, with the lookups the page needs."""

    def __init__(self, pipeline: Pipeline, gallery: Gallery, benchmark: Any = None, about: dict | None = None) -> None:
        self.pipeline = pipeline
        self.gallery = gallery
        self.benchmark = benchmark
        self.about = about or {}
        self._lock = threading.Lock()
        self._thumbnails: dict[str, bytes] = {}

    # checks ------------------------------------------------------------------------------------------------------
    def image_id(self, image_id: str) -> str:
        if not isinstance(image_id, str) or image_id not in self.gallery:
            raise RequestError(404, f"image {str(image_id)[:80]!r} is not in the gallery")
        return image_id

    @staticmethod
    def checked_text(text: object) -> str:
        if not isinstance(text, str) or not text.strip():
            raise RequestError(422, "text is blank: give the modification to apply to the reference")
        if len(text) > MAX_TEXT:
            raise RequestError(422, f"text is {len(text)} characters long, over the limit of {MAX_TEXT}")
        return text.strip()

    def checked_k(self, k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(MAX_K, len(self.gallery)):
            raise RequestError(422, f"k must be a whole number from 1 to {min(MAX_K, len(self.gallery))}, got {k!r}")
        return k

    def query(self, query_id: str) -> Query:
        if self.benchmark is None:
            raise RequestError(404, "no benchmark is loaded: benchmark queries need `cir serve` on a config's benchmark")
        query = self.benchmark.query_by_id.get(str(query_id))
        if query is None:
            raise RequestError(404, f"query {str(query_id)[:80]!r} is not a query of {self.benchmark.label}")
        return query

    # answers -----------------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            **self.about,
            "gallery": {"name": self.gallery.name, "images": len(self.gallery)},
            "pipeline": repr(p),
            "stages": [{"run": run, "label": label} for run, label in p.describe().items()],
            "benchmark": None if self.benchmark is None else {"label": self.benchmark.label, "queries": len(self.benchmark.queries)},
            "limits": {"text": MAX_TEXT, "k": min(MAX_K, len(self.gallery))},
        }

    def gallery_page(self, offset: int, limit: int, shuffle: bool, seed: int | None) -> dict[str, Any]:
        ids = self.gallery.ids
        if shuffle:
            ids = random.Random(seed).sample(ids, min(limit, len(ids)))
            return {"total": len(self.gallery), "ids": ids}
        return {"total": len(self.gallery), "ids": ids[offset : offset + limit]}

    def benchmark_query(self, query_id: str) -> dict[str, Any]:
        query = self.query(query_id)
        b = self.benchmark
        return {"id": query.id, "reference": query.reference, "text": query.text,
                "targets": (b.targets or {}).get(query.id, []), "members": (b.subsets or {}).get(query.id, [])}

    def search(self, request: SearchRequest) -> dict[str, Any]:
        """Both stages for one query: each result's final and stage-one rank and score, a sparse stage one's shared
        terms, each stage's milliseconds, and for a benchmark query its ground truth and the target's rank per stage."""
        text, k = self.checked_text(request.text), self.checked_k(request.k)
        truth = self.benchmark_query(request.query_id) if request.query_id is not None else None
        query = Query("q", request.reference, text)
        depth = len(self.gallery) if truth else None  # the target's rank at each stage needs the whole ranking
        with self._lock:
            start = time.perf_counter()
            try:
                runs = self.pipeline.run([query], k, depth=depth)
            except UnknownIdError as exc:
                raise RequestError(404, str(exc)) from None
            total = time.perf_counter() - start
            times = {stage: 1000.0 * s for stage, s in self.pipeline.times.seconds.items()}
            final = next(reversed(runs.values()))["q"]
            explain = getattr(self.pipeline.retriever, "explain_many", None)
            terms = explain(query, final.ids[:k], top=6) if explain else {}
        first = {image_id: (i + 1, s) for i, (image_id, s) in enumerate(zip(runs["stage1"]["q"].ids, runs["stage1"]["q"].scores))}
        results = []
        for rank, (image_id, score) in enumerate(zip(final.ids[:k], final.scores[:k]), start=1):
            stage1_rank, stage1_score = first.get(image_id, (None, None))
            results.append({"id": image_id, "rank": rank, "score": float(score), "stage1_rank": stage1_rank,
                            "stage1_score": None if stage1_score is None else float(stage1_score),
                            "terms": [[term, float(w)] for term, w in terms.get(image_id, [])]})
        answer = {"query": {"reference": request.reference if request.reference in self.gallery else "(upload)",
                            "text": text, "k": k},
                  "results": results, "ms": {**times, "total": 1000.0 * total}, "stages": self.pipeline.describe()}
        if truth:
            targets = set(truth["targets"])
            answer["ground_truth"] = {**truth, "target_rank": {stage: _first_rank(run["q"], targets) for stage, run in runs.items()}}
        return answer

    def rerank(self, reference: str, text: str, candidates: Sequence[str]) -> dict[str, Any]:
        """The pipeline's rerankers over a candidate list from anywhere (taken as the stage-one order)."""
        text = self.checked_text(text)
        if not self.pipeline.rerankers:
            raise RequestError(409, "this pipeline has no stage-two reranker")
        if not isinstance(candidates, list) or not 1 <= len(candidates) <= 1000:
            raise RequestError(422, "candidates must be a list of 1 to 1000 gallery image ids")
        ids = [self.image_id(c) for c in candidates]
        if len(set(ids)) != len(ids):
            raise RequestError(422, "candidates lists an image more than once")
        with self._lock:
            start = time.perf_counter()
            results = self.pipeline.rerank(reference, text, ids)
            ms = 1000.0 * (time.perf_counter() - start)
        return {"results": [{"id": r.image_id, "rank": r.rank, "score": r.score, "stage1_rank": r.stage1_rank}
                            for r in results], "ms": {"rerank": ms}}

    def image_bytes(self, image_id: str, thumbnail: bool) -> tuple[bytes, str]:
        """A gallery image as PNG (a thumbnail when asked; thumbnails are kept in memory once made)."""
        image_id = self.image_id(image_id)
        if thumbnail and image_id in self._thumbnails:
            return self._thumbnails[image_id], "image/png"
        image = self.gallery.load(image_id)
        if thumbnail:
            image.thumbnail((THUMBNAIL, THUMBNAIL))
        out = io.BytesIO()
        image.save(out, format="PNG")
        data = out.getvalue()
        if thumbnail:
            self._thumbnails[image_id] = data
        return data, "image/png"


def _first_rank(ranking: Ranking, targets: set[str]) -> int | None:
    return next((i + 1 for i, image_id in enumerate(ranking.ids) if image_id in targets), None)


def describe_model(pipeline: Pipeline) -> dict[str, Any]:
    """Model name, weights and what they were trained on, as far as the stages say."""
    model = getattr(pipeline.retriever, "model", None)
    if model is None:
        return {"model": None}
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return {"model": model.name, "weights": model.weights_id or "random", "pretrained": cfg.get("tag"),
            "trained_on": cfg.get("trained_on")}

