"""The stage contract and its composition: `retriever % 100 >> reranker_a % 20 >> reranker_b` reads like the idea.

A stage-one `Retriever` indexes a gallery and returns a Run for a batch of queries; a stage-two `Reranker` reorders
the top of a Run. Both are abstract base classes with one constructor convention, `from_config(model, cache,
**params)`, the params being the free mapping under `stage_one` / `stage_two` of a config, passed through unchanged.
Built-in stages and plugins (entry-point groups `cir.retrievers` / `cir.rerankers`) are found by name in
`cir.registry` and wired exactly alike. A `Pipeline` chains one retriever and any number of rerankers, each stage
with its own cut-off: how many of its results the next stage reorders.
"""

from __future__ import annotations

import inspect
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import CirError
from .types import Gallery, Query, Ranking, Run

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .config import Config

DEFAULT_K = 50  # the cut-off when a composition gives none (CIRR's reference value)


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


class _Stage:
    """What both kinds of stage share: the constructor convention and the optional parts."""

    name = "stage"

    @classmethod
    def from_config(cls, model: Any, cache: "FeatureCache | None" = None, **params: Any):
        """Build the stage from a model, a feature cache (or None) and the config's free params, unchanged.

        The default passes them to the constructor; a param the constructor does not take is a one-line CirError.
        """
        accepted = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            known = [n for n, p in accepted.items() if n not in ("self", "model", "cache") and p.kind is not p.VAR_POSITIONAL]
            unknown = sorted(set(params) - set(known))
            if unknown:
                raise CirError(f"{cls.name}: unknown setting {unknown[0]!r} (known: {', '.join(known) or 'none'})")
        return cls(model, cache, **params)

    def index(self, gallery: Gallery) -> None:
        """Prepare for a gallery (encode it, build an index); stages that need nothing leave it as is."""

    @property
    def images_encoded(self) -> int | None:
        """Gallery images the last `index` encoded (0 on a cache hit); None for a stage that encodes nothing."""
        return None

    def describe(self) -> str:
        """A short label for tables ("dense, flat")."""
        return self.name


class Retriever(_Stage, ABC):
    """Stage one: `index(gallery)` once, then `search(queries, k) -> Run`, best first.

    `max_results` (optional): the most results one search may return (an engine's cap, or a bound a user sets so that
    a full-depth evaluation stays cheap); the pipeline never asks for more.
    """

    name = "retriever"
    max_results: int | None = None

    @abstractmethod
    def index(self, gallery: Gallery) -> None:
        """Index the gallery that `search` ranks."""

    @abstractmethod
    def search(self, queries: Sequence[Query], k: int) -> Run:
        """The k best gallery images for each query."""

    def __mod__(self, k: int) -> "Pipeline":
        return Pipeline(self, k=_cutoff(k))

    def __rshift__(self, other: object) -> "Pipeline":
        return Pipeline(self) >> other

    def __rrshift__(self, other: object) -> "Pipeline":
        raise TypeError(f"a {self.name} retriever can only start a pipeline, not follow {type(other).__name__}")


class Reranker(_Stage, ABC):
    """Stage two: `rerank(queries, run, k) -> Run`, reordering each query's first k candidates of `run`.

    A reranker may return only the reordered head: the pipeline keeps the rest of the previous stage's ranking below
    it, in its order.
    """

    name = "reranker"

    @abstractmethod
    def rerank(self, queries: Sequence[Query], run: Run, k: int | None = None) -> Run:
        """Reorder the first k candidates (all when None) of each query's ranking in `run`."""

    def __mod__(self, k: int) -> "CutReranker":
        return CutReranker(self, _cutoff(k))

    def __rshift__(self, other: object):
        raise TypeError(f"a pipeline starts with a stage-one Retriever, not with the {self.name} reranker")


@dataclass(frozen=True)
class CutReranker:
    """A reranker with its cut-off (`reranker % 20`): how many of its results the next stage reorders."""

    reranker: Reranker
    k: int

    def __rshift__(self, other: object):
        raise TypeError(f"a pipeline starts with a stage-one Retriever, not with the {self.reranker.name} reranker")


def _cutoff(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"a cut-off is a whole number of candidates, got {k!r}")
    if k < 1:
        raise ValueError(f"a cut-off is at least 1 candidate, got {k}")
    return k


class Pipeline:
    """Stage one, any number of rerankers, and the cut-off after each stage.

    `k` is stage one's cut-off (how many candidates the first reranker reorders); `rerankers` holds each reranker
    with its own cut-off (None: it hands on as many as it received). `exclude_reference` drops a query's own
    reference image from its results (CIRR's rule, and what a catalogue search wants); FashionIQ's and CIRCO's
    protocols keep it.
    """

    def __init__(
        self,
        retriever: Retriever,
        rerankers: Sequence[tuple[Reranker, int | None]] = (),
        k: int = DEFAULT_K,
        exclude_reference: bool = True,
    ) -> None:
        if not isinstance(retriever, Retriever):
            raise TypeError(f"a pipeline starts with a stage-one Retriever, got {type(retriever).__name__}")
        self.retriever = retriever
        self.rerankers = list(rerankers)
        self.k = _cutoff(k)
        self.exclude_reference = exclude_reference
        self.gallery: Gallery | None = None
        self.times = StageTimes()
        self._by_size: dict[int, list[str]] | None = None

    # composition ---------------------------------------------------------------------------------------------
    def _with(self, rerankers: list[tuple[Reranker, int | None]], k: int | None = None) -> "Pipeline":
        return Pipeline(self.retriever, rerankers, self.k if k is None else k, self.exclude_reference)

    def __rshift__(self, other: object) -> "Pipeline":
        if isinstance(other, CutReranker):
            return self._with(self.rerankers + [(other.reranker, other.k)])
        if isinstance(other, Reranker):
            return self._with(self.rerankers + [(other, None)])
        if isinstance(other, Pipeline) or isinstance(other, Retriever):
            raise TypeError("only rerankers follow stage one: a pipeline holds exactly one Retriever, at its start")
        raise TypeError(f"cannot chain {type(other).__name__} after a pipeline: expected a Reranker")

    def __mod__(self, k: int) -> "Pipeline":
        """Set the cut-off of the last stage."""
        if not self.rerankers:
            return self._with([], _cutoff(k))
        *rest, (last, _) = self.rerankers
        return self._with(rest + [(last, _cutoff(k))])

    @property
    def reranker(self) -> Reranker | None:
        """The first reranker, if any."""
        return self.rerankers[0][0] if self.rerankers else None

    @property
    def stages(self) -> list[Retriever | Reranker]:
        return [self.retriever] + [r for r, _ in self.rerankers]

    def describe(self) -> dict[str, str]:
        """Run name -> a label of what produced it: "stage 1 (dense, flat)", "stage 1 + 2 (dual-encoder)", ..."""
        labels = {"stage1": f"stage 1 ({self.retriever.describe()})"}
        for i, (reranker, _) in enumerate(self.rerankers, start=2):
            labels[f"stage{i}"] = f"stage {' + '.join(str(n) for n in range(1, i + 1))} ({reranker.describe()})"
        return labels

    def __repr__(self) -> str:
        parts = [f"{self.retriever.name} % {self.k}"]
        parts += [r.name if k is None else f"{r.name} % {k}" for r, k in self.rerankers]
        return f"Pipeline({' >> '.join(parts)})"

    # construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: "Config | str | os.PathLike | dict", model: Any = None, top_k: int | None = None) -> "Pipeline":
        """The pipeline a config describes (what `cir eval` runs): its model, feature cache and stages, by name.

        `config`: a Config, a YAML path or a mapping. `model`: an already built model to use instead of the config's.
        `top_k`: stage one's cut-off when the config gives none (a benchmark's reference value; else 50).
        """
        from .cache import FeatureCache
        from .config import Config
        from .registry import rerankers, retrievers

        if isinstance(config, (str, os.PathLike)):
            config = Config.load(config)
        elif isinstance(config, dict):
            config = Config.from_dict(config)
        from .models import model_from_settings

        model = model if model is not None else model_from_settings(config.model)
        cache = FeatureCache(config.cache_dir) if config.cache_dir else None
        first = config.stage_one
        retriever = _build(retrievers, first, model, cache, config.source, "stage_one")
        pipeline = cls(retriever, k=first.k or top_k or DEFAULT_K)
        for i, stage in enumerate(config.stage_two):
            where = "stage_two" if len(config.stage_two) == 1 else f"stage_two[{i}]"
            reranker = _build(rerankers, stage, model, cache, config.source, where)
            pipeline = pipeline >> (reranker if stage.k is None else reranker % stage.k)
        return pipeline

    @classmethod
    def from_pretrained(
        cls,
        model: str = "blip-tiny",
        pretrained: str = "synth",
        cache_dir: str | os.PathLike | None = None,
        k: int = DEFAULT_K,
        device: str = "cpu",
    ) -> "Pipeline":
        """Dense stage one % k >> dual-encoder stage two of a pretrained tag (`list_pretrained()`), via from_config."""
        from .config import Config

        cfg = Config()
        cfg.model.name, cfg.model.pretrained, cfg.model.device = model, pretrained, device
        cfg.stage_one.k = k
        cfg.cache_dir = str(cache_dir) if cache_dir is not None else None
        return cls.from_config(cfg)

    # use -------------------------------------------------------------------------------------------------------
    def index(self, gallery: Gallery | str | os.PathLike | Sequence[str | os.PathLike]) -> "Pipeline":
        """Index a Gallery, a folder of images, or a list of image paths (ids are file stems) in every stage."""
        if not isinstance(gallery, Gallery):
            if isinstance(gallery, (str, os.PathLike)):
                gallery = Gallery.from_folder(gallery)
            else:
                gallery = Gallery.from_paths(list(gallery))
        self.gallery = gallery
        self._by_size = None
        for stage in self.stages:
            stage.index(gallery)
        return self

    @property
    def images_encoded(self) -> int:
        """Gallery images the last `index` encoded over all stages (0 when every stage hit the cache)."""
        return sum(stage.images_encoded or 0 for stage in self.stages)

    def run(
        self, queries: Sequence[Query], k: int | None = None, depth: int | None = None, rerank: bool = True
    ) -> dict[str, Run]:
        """Every stage over a batch: {"stage1": Run, "stage2": Run, ...} (one per reranker), timed per stage.

        Stage one ranks `depth` candidates (at least k and every cut-off); each reranker reorders the first
        cut-off candidates of the stage before it and keeps the rest in that stage's order, so a full-depth run
        still ranks every gallery image. A cut-off on the last reranker truncates the final run.
        """
        depth = max(k or 0, self.k, depth or 0, *(c or 0 for _, c in self.rerankers))
        if self.retriever.max_results is not None:
            depth = min(depth, max(self.retriever.max_results - 1, 1))  # one spare for the reference it drops
        self.times = StageTimes(queries=len(queries))
        start = time.perf_counter()
        excluded = self._excluded(queries) if self.exclude_reference else {}
        spare = max((len(ids) for ids in excluded.values()), default=0)
        first = self.retriever.search(queries, depth + spare)
        runs = {"stage1": _drop(first, queries, excluded, depth) if excluded else first}
        self.times.seconds["stage1"] = time.perf_counter() - start
        if not rerank:
            return runs
        previous, cut = runs["stage1"], self.k
        for i, (reranker, own_cut) in enumerate(self.rerankers, start=2):
            start = time.perf_counter()
            reranked = _keep_tail(reranker.rerank(queries, previous, cut), previous, queries)
            if own_cut is not None and i == len(self.rerankers) + 1:
                reranked = reranked.top(own_cut)
            runs[f"stage{i}"] = previous = reranked
            self.times.seconds[f"stage{i}"] = time.perf_counter() - start
            cut = own_cut or cut
        return runs

    def search_batch(self, queries: Sequence[Query], k: int = 10) -> Run:
        """The final top-k of every query."""
        return _last(self.run(queries, k)).top(k)

    def search(self, reference: str | os.PathLike, text: str, k: int = 10) -> list[Result]:
        """Top-k results for one query; `reference` is a gallery id or an image path."""
        query = Query("q", str(reference), text)
        runs = self.run([query], k)
        return _results(_last(runs)["q"].top(k), runs["stage1"]["q"])

    def rerank(self, reference: str | os.PathLike, text: str, candidate_ids: Sequence[str]) -> list[Result]:
        """Every reranker over a candidate list from anywhere (their order is taken as the stage-one order)."""
        if not self.rerankers:
            raise CirError("this pipeline has no stage-two reranker")
        query = Query("q", str(reference), text)
        ids = list(candidate_ids)
        first = Ranking("q", ids, [float(len(ids) - i) for i in range(len(ids))])
        previous = Run([first])
        for reranker, _ in self.rerankers:
            previous = _keep_tail(reranker.rerank([query], previous, len(ids)), previous, [query])
        return _results(previous["q"], first)

    # the query's own reference -----------------------------------------------------------------------------------
    def _excluded(self, queries: Sequence[Query]) -> dict[str, set[str]]:
        """Per query, the gallery ids that are its reference: the id itself, or for an image path the gallery images
        with the same content (a path to a gallery image is the same image)."""
        out: dict[str, set[str]] = {}
        for q in queries:
            if self.gallery is not None and q.reference in self.gallery:
                out[q.id] = {q.reference}
            elif self.gallery is not None and Path(q.reference).is_file():
                out[q.id] = self._same_content(Path(q.reference))
            else:
                out[q.id] = {q.reference}
        return out

    def _same_content(self, path: Path) -> set[str]:
        from .io import content_fingerprint

        if self._by_size is None:
            self._by_size = {}
            for image_id in self.gallery.ids:
                try:
                    size = os.stat(self.gallery.path(image_id)).st_size
                except OSError:
                    continue
                self._by_size.setdefault(size, []).append(image_id)
        same_size = self._by_size.get(path.stat().st_size, [])
        if not same_size:
            return set()
        wanted = content_fingerprint(path)
        return {i for i in same_size if content_fingerprint(self.gallery.path(i)) == wanted}


def _build(registry, stage, model, cache, source: str, where: str):
    """A stage from its config section: the class by name, then `from_config(model, cache, **params)`."""
    try:
        stage_class = registry.get(stage.kind)
    except CirError as exc:
        raise CirError(f"{source}: {where}.kind: {exc}") from None
    try:
        return stage_class.from_config(model, cache, **stage.params)
    except CirError as exc:
        raise CirError(f"{source}: {where}: {exc}") from None


def _drop(run: Run, queries: Sequence[Query], excluded: dict[str, set[str]], depth: int) -> Run:
    out = Run(name=run.name, query_states=run.query_states)
    for q in queries:
        r, skip = run[q.id], excluded.get(q.id, set())
        keep = [i for i, image_id in enumerate(r.ids) if image_id not in skip][:depth]
        out[q.id] = Ranking(q.id, [r.ids[i] for i in keep], [r.scores[i] for i in keep])
    return out


def _last(runs: dict[str, Run]) -> Run:
    return next(reversed(runs.values()))


def _keep_tail(reranked: Run, previous: Run, queries: Sequence[Query]) -> Run:
    """A reranker's run with, below each query's reordered head, the rest of the previous ranking in its order."""
    out = Run(name=reranked.name, query_states=reranked.query_states)
    for q in queries:
        if q.id not in reranked:
            raise CirError(f"reranker run {reranked.name!r} has no ranking for query {q.id!r}")
        head, before = reranked[q.id], previous[q.id]
        seen = set(head.ids)
        tail = [i for i in before.ids if i not in seen]
        floor = min(head.scores, default=0.0)
        out[q.id] = Ranking(q.id, head.ids + tail, list(head.scores) + [floor - 1.0 - j for j in range(len(tail))])
    return out


def _results(final: Ranking, stage1: Ranking) -> list[Result]:
    first_rank = {image_id: (i + 1, s) for i, (image_id, s) in enumerate(zip(stage1.ids, stage1.scores))}
    return [
        Result(image_id, float(score), rank + 1, *first_rank.get(image_id, (None, None)))
        for rank, (image_id, score) in enumerate(zip(final.ids, final.scores))
    ]
