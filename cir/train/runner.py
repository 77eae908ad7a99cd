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


def train_section(stage: str) -> str:
    """The config section a stage trains from: `train_stage1`, ..., `train_sparse_words` for `sparse-words`."""
    return f"train_{stage.replace('-', '_')}"


def _check_options(cfg: Config, stage: str, task_class: type, options: dict) -> None:
    """An unknown key under train_<stage>.options is a config error naming the file and the key, not a TypeError."""
    internal = {"model", "data", "val_benchmark", "scene_labels", "cache", "image_words", "edit_words", "val_words"}
    known = set(inspect.signature(task_class).parameters) - internal
    known.add("stage1" if stage != "stage1" else "init_from_model")
    unknown = sorted(set(options) - known)
    if unknown:
        raise CirError(f"{cfg.source}: unknown key {train_section(stage)}.options.{unknown[0]} (known: {', '.join(sorted(known))})")


def _check_synthetic_options(cfg: Config, stage: str, options: dict) -> None:
    """The scene probes and scene-word supervision read the synthetic benchmark's metadata: refuse them elsewhere
    before any image is read."""
    from ..data.synth.layout import read_own_metadata

    synthetic = read_own_metadata(Path(cfg.benchmark.root)) is not None
    if options.get("scene_weight") and not synthetic:
        raise CirError(
            f"{cfg.source}: {train_section(stage)}.options.scene_weight needs cir's synthetic benchmark (its scene metadata), "
            f"but {cfg.benchmark.root} is not one: set scene_weight to 0 for {cfg.benchmark.name}"
        )
    if options.get("word_supervision") == "scene" and not synthetic:
        raise CirError(
            f"{cfg.source}: {train_section(stage)}.options.word_supervision: scene needs cir's synthetic benchmark (its scene "
            f"metadata), but {cfg.benchmark.root} is not one: use word_supervision: captions for {cfg.benchmark.name}"
        )


def _sparse_words(cfg: Config, data, opts: dict, edits: bool = False) -> dict:
    """The words sparse training holds its terms to: the train images' scene words (word_supervision: scene; with
    `edits`, the train queries' edit words too) and, on the synthetic benchmark, the val split's
    truth for the term metrics of each epoch's validation."""
    from ..data.synth.layout import read_own_metadata

    root = cfg.benchmark.root
    if read_own_metadata(Path(root)) is None:
        return {}
    from ..data.synth.words import edit_words, scene_words, term_truth

    out = {"val_words": term_truth(root, cfg.benchmark.split)}
    if opts.get("word_supervision") == "scene":
        words = scene_words(root, cfg.benchmark.train_split)
        out["image_words"] = [words[i] for i in data.image_ids]
        if edits:
            brought = edit_words(root, cfg.benchmark.train_split)
            out["edit_words"] = [brought[q.id] for q in data.queries]
    return out


def train_stage(cfg: Config, stage: str, out: Path, resume: bool = True) -> dict:
    """Train `stage` (stage1, stage2 or sparse) as the config says, writing weights and metrics under `out`."""
    from ..cache import FeatureCache
    from ..models import create_model, model_from_settings

    tcfg = getattr(cfg, train_section(stage))
    opts = dict(tcfg.options)
    _check_synthetic_options(cfg, stage, opts)
    seed_everything(tcfg.seed)
    train_set = open_benchmark(cfg, cfg.benchmark.train_split)
    val_set = open_benchmark(cfg)
    cache = FeatureCache(cfg.cache_dir) if cfg.cache_dir else None
    device = cfg.model.device

    def with_scene_labels(data) -> dict:
        if not opts.get("scene_weight"):
            return opts
        from .probes import scene_labels

        return {**opts, "scene_labels": scene_labels(cfg.benchmark.root, cfg.benchmark.train_split, data.image_ids)}

    if stage == "stage1":
        from .stage1 import Stage1Task

        _check_options(cfg, stage, Stage1Task, opts)
        if opts.pop("init_from_model", False):  # fine-tune the config's weights (BLIP's pre-trained model_base.pth)
            model = model_from_settings(cfg.model)
        else:
            model = create_model(cfg.model.name, stages=("stage1",), device=device)
        data = load_triplets(train_set, model.preprocess, tcfg.max_queries)
        task = Stage1Task(model, data, val_set, cache=cache, **with_scene_labels(data))
        task.device = model.device
        return fit(task, tcfg, out, resume, weights_name="stage1")
    from .sparse import SparseTask
    from .sparse_words import SparseWordsTask
    from .stage2 import Stage2Task

    task_class = {"sparse": SparseTask, "sparse-words": SparseWordsTask}.get(stage, Stage2Task)
    _check_options(cfg, stage, task_class, opts)
    stage1_path = opts.pop("stage1", None) or cfg.model.stage1
    if stage1_path is None:
        raise CirError(f"{cfg.source}: {train_section(stage)}.options.stage1 must name the stage-one checkpoint")
    stages = ("stage1",) if stage.startswith("sparse") else ("stage1", "stage2")
    model = create_model(cfg.model.name, stage1_path, stages=stages, device=device)
    data = load_triplets(train_set, model.preprocess, tcfg.max_queries)
    if stage == "sparse":
        task = SparseTask(model, data, val_set, cache=cache, **opts, **_sparse_words(cfg, data, opts))
    elif stage == "sparse-words":
        task = SparseWordsTask(model, data, val_set, cache=cache, **opts, **_sparse_words(cfg, data, opts, edits=True))
    else:
        task = Stage2Task(model, data, val_set, cache=cache, **with_scene_labels(data))
    task.device = model.device
    return fit(task, tcfg, out, resume, weights_name="sparse" if stage.startswith("sparse") else stage)
