"""From a Config to a trained stage: data, model, task, loop."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from ..config import Config
from ..errors import CirError
from ..experiment import open_benchmark
from .data import load_triplets
from .loop import fit, seed_everything

log = logging.getLogger(__name__)


def _check_options(cfg: Config, stage: str, task_class: type, options: dict) -> None:
    """An unknown key under train_<stage>.options is a config error naming the file and the key, not a TypeError."""
    known = set(inspect.signature(task_class).parameters) - {"model", "data", "val_benchmark", "scene_labels"}
    if stage != "stage1":
        known.add("stage1")  # the stage-one checkpoint the later stages read
    unknown = sorted(set(options) - known)
    if unknown:
        raise CirError(f"{cfg.source}: unknown key train_{stage}.options.{unknown[0]} (known: {', '.join(sorted(known))})")


def train_stage(cfg: Config, stage: str, out: Path, resume: bool = True) -> dict:
    from ..models import create_model

    tcfg = getattr(cfg, f"train_{stage}")
    seed_everything(tcfg.seed)
    train_set = open_benchmark(cfg, cfg.benchmark.train_split)
    val_set = open_benchmark(cfg)
    opts = dict(tcfg.options)

    def with_scene_labels(data) -> dict:
        if not opts.get("scene_weight"):
            return opts
        from .probes import scene_labels

        return {**opts, "scene_labels": scene_labels(cfg.benchmark.root, cfg.benchmark.train_split, data.image_ids)}

    if stage == "stage1":
        from .stage1 import Stage1Task

        _check_options(cfg, stage, Stage1Task, opts)
        model = create_model(cfg.model.name)
        data = load_triplets(train_set, model.preprocess, tcfg.max_queries)
        task = Stage1Task(model, data, val_set, **with_scene_labels(data))
        return fit(task, tcfg, out, resume, weights_name="stage1")
    from .sparse import SparseTask
    from .stage2 import Stage2Task

    task_class = SparseTask if stage == "sparse" else Stage2Task
    _check_options(cfg, stage, task_class, opts)
    stage1_path = opts.pop("stage1", None) or cfg.model.stage1
    if stage1_path is None:
        raise CirError(f"{cfg.source}: train_{stage}.options.stage1 must name the stage-one checkpoint")
    stages = ("stage1",) if stage == "sparse" else ("stage1", "stage2")
    model = create_model(cfg.model.name, stage1_path, stages=stages)
    data = load_triplets(train_set, model.preprocess, tcfg.max_queries)
    if stage == "sparse":
        return fit(SparseTask(model, data, val_set, **opts), tcfg, out, resume, weights_name="sparse")
    return fit(Stage2Task(model, data, val_set, **with_scene_labels(data)), tcfg, out, resume, weights_name="stage2")
