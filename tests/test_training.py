"""Training really learns: a short stage-one run on the tiny synthetic benchmark fits its training queries far
above chance (ranked against the whole train gallery).

A micro model (one small layer per tower) keeps this under a minute. 300 training queries are too few to generalise
(the same run stays near chance on val); generalisation is what the shipped model's training and `cir demo` measure.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cir.config import TrainConfig
from cir.data import load_benchmark
from cir.models import create_model, get_model_config, register_model
from cir.train.data import load_triplets
from cir.train.probes import scene_labels
from cir.train.stage1 import Stage1Task
from cir.train.loop import fit


@pytest.fixture(scope="module")
def micro():
    base = get_model_config("blip-tiny")
    config = dataclasses.replace(
        base,
        vision=dataclasses.replace(base.vision, width=64, depth=1, heads=2),
        text=dataclasses.replace(base.text, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128),
        embed_dim=64,
        stage2_average_layers=1,
    )
    return register_model("blip-micro-test", config)


def fresh_micro_model_and_data(synth_tiny: Path):
    """A freshly seeded micro model, the tiny benchmark's train split, its triplets in memory and their scene labels."""
    torch.manual_seed(0)
    model = create_model("blip-micro-test")
    train = load_benchmark("cirr", synth_tiny, "train")
    data = load_triplets(train, model.preprocess)
    return model, train, data, scene_labels(synth_tiny, "train", data.image_ids)


def test_a_short_stage_one_run_learns(micro, synth_tiny: Path, tmp_path: Path) -> None:
    model, train, data, labels = fresh_micro_model_and_data(synth_tiny)
    task = Stage1Task(model, data, train, val_queries=None, scene_weight=1.0, scene_labels=labels)
    chance = 100 * 10 / (len(train.gallery) - 1)
    before = task.validate()["val_recall@10"]
    cfg = TrainConfig(epochs=40, batch_size=32, lr=2e-3, warmup_steps=20, threads=1)
    after = fit(task, cfg, tmp_path / "run", weights_name="stage1")
    assert before < 3 * chance
    assert after["val_recall@10"] > 10 * chance, (before, after, chance)
    assert (tmp_path / "run" / "stage1.safetensors").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == cfg.epochs


def test_a_short_stage_two_run_learns_to_pick_the_target_among_its_near_duplicates(micro, synth_tiny: Path, tmp_path: Path) -> None:
    """Stage two trained on its own (stage-one weight 0) beats chance at telling the target from the reference and
    the one-edit near-duplicates of its group, on the training queries it saw."""
    from cir.train.stage2 import Stage2Task

    model, train, data, labels = fresh_micro_model_and_data(synth_tiny)
    task = Stage2Task(
        model, data, None, group_size=6, mined_negatives=0, calibration_queries=0,
        stage1_weight_scale=0.0, scene_weight=1.0, scene_labels=labels,
    )
    cfg = TrainConfig(epochs=12, batch_size=16, lr=2e-3, warmup_steps=10, threads=1)
    first = fit(task, TrainConfig(epochs=1, batch_size=16, lr=0.0, warmup_steps=1, threads=1), tmp_path / "zero")
    after = fit(task, cfg, tmp_path / "run", weights_name="stage2")
    chance = 1 / 6  # a group: the target, the reference and 4 near-duplicates (a tie counts as a miss)
    assert first["acc"] < chance, first
    assert after["acc"] > 1.5 * chance, (first, after)
    assert after["cells"] < first["cells"]
    assert (tmp_path / "run" / "stage2.safetensors").is_file()


def test_an_unknown_training_option_names_the_config_file_and_key(synth_tiny: Path, tmp_path: Path) -> None:
    from cir.config import Config
    from cir.errors import CirError
    from cir.train.runner import train_stage

    cfg = Config.from_dict(
        {"benchmark": {"name": "cirr", "release": "synth", "root": str(synth_tiny)},
         "train_stage2": {"options": {"stage1": "x.safetensors", "init_from_stage_1": False}}},
        source="my.yaml",
    )
    with pytest.raises(CirError, match=r"^my.yaml: unknown key train_stage2.options.init_from_stage_1 \(known: .*init_from_stage1"):
        train_stage(cfg, "stage2", tmp_path / "run")


def test_a_short_sparse_run_learns_vocabulary_vectors_that_retrieve(micro, synth_tiny: Path, tmp_path: Path) -> None:
    """Dense-to-sparse heads with a trainable vocabulary projection start from the word-embedding table, train it,
    keep their term caps and save and reload it; a short distillation from a briefly trained stage one retrieves
    far above chance."""
    from cir.stages.sparse_head import SparseEncoder
    from cir.train.sparse import SparseTask

    model, train, data, labels = fresh_micro_model_and_data(synth_tiny)
    stage1 = Stage1Task(model, data, None, val_queries=None, scene_weight=1.0, scene_labels=labels)
    fit(stage1, TrainConfig(epochs=25, batch_size=32, lr=2e-3, warmup_steps=20, threads=1), tmp_path / "stage1")
    task = SparseTask(model, data, train, val_queries=None, ramp_steps=20, anneal_steps=40, max_query_terms=16,
                      max_image_terms=16, mined=2, mined_pool=6, trainable_vocab=True)
    idx = np.arange(8)
    first, second = (task._draw_mined(idx, np.random.default_rng(seed)) for seed in (0, 1))
    assert first.shape == (8, 2) and task.mined.shape[1] == 6
    assert all(len(set(row)) == 2 and set(row) <= set(pool) for row, pool in zip(first.tolist(), task.mined[idx].tolist()))
    assert not np.array_equal(first, second)  # drawn afresh: each step sees other neighbours
    table = model.stage1.text_encoder.embeddings.word_embeddings.weight[: task.module.query.vocab.shape[0]]
    torch.testing.assert_close(task.module.query.vocab, table)
    assert task.module.query.vocab.requires_grad
    after = fit(task, TrainConfig(epochs=30, batch_size=64, lr=3e-3, warmup_steps=10, threads=1), tmp_path / "sparse",
                weights_name="sparse")
    chance = 100 * 10 / (len(train.gallery) - 1)
    assert after["val_sparse_recall@10"] > 10 * chance, after
    assert after["query_terms"] <= 16 and after["image_terms"] <= 16
    assert not torch.allclose(task.module.query.vocab, table)  # the projection trained
    reloaded = SparseEncoder.load(tmp_path / "sparse" / "sparse.safetensors", model)
    assert (reloaded.max_query_terms, reloaded.max_image_terms) == (16, 16)
    with torch.no_grad():  # weights are stored in fp16
        dense = task.image_emb[:50]
        torch.testing.assert_close(reloaded.image(dense), task.module.image(dense), atol=2e-2, rtol=1e-2)
