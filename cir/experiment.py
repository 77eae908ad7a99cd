"""A configured experiment: the benchmark, the model and the pipeline a Config describes, and their evaluation."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .cache import FeatureCache
from .config import Config
from .errors import CirError
from .pipeline import Pipeline
from .registry import rerankers, retrievers
from .types import Ranking, Run

log = logging.getLogger(__name__)


def open_benchmark(cfg: Config, split: str | None = None):
    from .data import load_benchmark

    b = cfg.benchmark
    return load_benchmark(
        b.name, b.root, split or b.split, category=b.category, release=b.release, image_root=b.image_root
    )


def load_model(cfg: Config):
    """The model a config names: shipped pretrained weights, or checkpoint files."""
    from .models import create_model
    from .models.pretrained import load_pretrained_model

    m = cfg.model
    if m.stage1 is None and m.pretrained:
        return load_pretrained_model(m.pretrained, m.device)
    if m.stage1 is None:
        raise CirError(f"{cfg.source}: model needs either `pretrained` or a `stage1` checkpoint path")
    return create_model(m.name, checkpoint=m.stage1, stage2_checkpoint=m.stage2, device=m.device)


def stage1_weight(cfg: Config) -> float | None:
    """The config's weight of the stage-one score, else the pretrained model's; None means 1 / stage-one temperature."""
    from .models.pretrained import get_pretrained

    if cfg.stage_two.stage1_weight is not None:
        return cfg.stage_two.stage1_weight
    if cfg.model.pretrained and cfg.model.stage1 is None:
        return get_pretrained(cfg.model.pretrained).stage1_weight
    return None


def build_pipeline(cfg: Config, model, top_k: int) -> Pipeline:
    cache = FeatureCache(cfg.cache_dir)
    s1, s2 = cfg.stage_one, cfg.stage_two
    common = dict(device=cfg.model.device, autocast_bf16=cfg.model.autocast_bf16)
    retriever_kwargs = dict(index=s1.index, index_params=s1.index_params, batch_size=s1.batch_size, **common)
    if s1.kind == "sparse":
        retriever_kwargs["head"] = s1.sparse_head
    retriever = retrievers.get(s1.kind)(model, cache, **retriever_kwargs)
    pipeline = retriever % (s1.k or top_k)
    if s2.kind:
        pipeline = pipeline >> rerankers.get(s2.kind)(model, cache, stage1_weight(cfg), batch_size=s2.batch_size, **common)
    return pipeline


@dataclass
class Evaluation:
    """What `cir eval` reports: metrics per stage (with ms/query), the runs, and what indexing cost."""

    benchmark: object
    runs: dict[str, Run]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    images_encoded: int = 0
    index_seconds: float = 0.0


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


def evaluate(cfg: Config, split: str | None = None) -> Evaluation:
    from .eval.metrics import evaluate as score_run

    benchmark = open_benchmark(cfg, split)
    model = load_model(cfg)
    pipeline = build_pipeline(cfg, model, benchmark.top_k)
    pipeline.exclude_reference = benchmark.exclude_reference
    start = time.perf_counter()
    pipeline.index(benchmark.gallery)
    index_seconds = time.perf_counter() - start
    encoders = [pipeline.retriever.encoder] + ([pipeline.reranker.encoder] if pipeline.reranker else [])
    encoded = sum(e.features.encoded for e in encoders)
    runs = pipeline.run(benchmark.queries, pipeline.k, depth=len(benchmark.gallery))
    result = Evaluation(benchmark, runs, images_encoded=encoded, index_seconds=index_seconds)
    if benchmark.targets is not None:
        for stage, run in runs.items():
            result.metrics[stage] = {**score_run(benchmark, run), "ms/query": pipeline.times.ms_per_query(stage)}
    return result
