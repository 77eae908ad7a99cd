"""The BLIP-base run configs (configs/cirr-blip.yaml, configs/fashioniq-blip.yaml).

They load with the reference protocol; `cir eval` names what to download when the annotations or a checkpoint are
missing (annotations first); and the same configs run on a CPU under bfloat16 autocast, end to end up to the CIRR
server files. The full-size weights cannot be had offline, so the runs use the golden fixtures' sizes and weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from cir.cli import main
from cir.config import Config
from cir.data import FASHIONIQ_CATEGORIES, load_benchmark
from cir.eval.submission import check_submission_file
from cir.experiment import open_benchmark
from cir.io import read_json
from cir.models import BLIP_MEAN, BLIP_STD, create_model, get_model_config
from cir.models.sources import PUBLISHED_CHECKPOINTS, REFERENCE_REPO
from cir.bench.encode_timing import duration, measure
from cir.stages.rerank import score_candidates

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
GOLDEN_STAGE1 = GOLDEN / "stage1.safetensors"
GOLDEN_STAGE2 = GOLDEN / "stage2.safetensors"
BLIP_CONFIGS = {"cirr": REPO / "configs" / "cirr-blip.yaml", "fashioniq": REPO / "configs" / "fashioniq-blip.yaml"}
REFERENCE_K = {"cirr": 50, "fashioniq": 100}  # candidates reranked per query in the reference work
BLIP_IMAGE_SIZE = 384
# bfloat16 keeps 8 significant bits; through the fixture's 2 ViT blocks and 8 + 8 text layers the stage-two logits
# move by about 0.02 (fp32 parity is 2e-5, tests/test_golden.py).
BF16_ATOL = 0.05
TINY_SPLIT_IMAGES = 56  # the CIRR recall file lists 50 images besides the reference
SET_SIZE = 6  # CIRR img_set: the reference and 5 others


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    return err


def config_variant(benchmark: str, tmp_path: Path, changes: dict) -> Path:
    """The BLIP config of `benchmark` with `changes` (section -> values, or top-level key -> value), in tmp_path."""
    data = yaml.safe_load(BLIP_CONFIGS[benchmark].read_text())
    for section, values in changes.items():
        if isinstance(values, dict):
            data[section].update(values)
        else:
            data[section] = values
    path = tmp_path / f"{benchmark}-variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("benchmark", sorted(BLIP_CONFIGS))
def test_config_loads_with_the_reference_protocol(benchmark, benchmarks_dir):
    cfg = Config.load(BLIP_CONFIGS[benchmark])
    assert cfg.benchmark.name == benchmark and cfg.benchmark.root == f"data/{benchmark}"
    assert cfg.model.name == "blip-base" and cfg.model.pretrained is None
    assert cfg.model.stage1 == f"checkpoints/{benchmark}_stage1.pt"
    assert cfg.model.stage2 == f"checkpoints/{benchmark}_stage2.pt"
    assert cfg.stage_one.kind == "dense" and cfg.stage_one.k == REFERENCE_K[benchmark]
    [reranker] = cfg.stage_two
    assert reranker.kind == "dual-encoder" and reranker.params["stage1_weight"] == 0.0
    model = get_model_config(cfg.model.name)
    assert model.vision.image_size == BLIP_IMAGE_SIZE and not model.share_stage2_vision
    assert (model.image_mean, model.image_std) == (BLIP_MEAN, BLIP_STD)
    cfg.benchmark.root = str(benchmarks_dir / benchmark)
    split = open_benchmark(cfg)
    assert (split.name, split.split, split.top_k) == (benchmark, "val", cfg.stage_one.k)


def test_fashioniq_config_runs_each_category(benchmarks_dir):
    """One file serves the three categories: `benchmark.category` picks which (README: run it three times)."""
    cfg = Config.load(BLIP_CONFIGS["fashioniq"])
    assert cfg.benchmark.category in FASHIONIQ_CATEGORIES
    cfg.benchmark.root = str(benchmarks_dir / "fashioniq")
    for category in FASHIONIQ_CATEGORIES:
        cfg.benchmark.category = category
        split = open_benchmark(cfg)
        assert split.category == category and split.gallery.name == f"fashioniq-{category}-val"


def test_eval_names_missing_annotations_before_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--config", str(BLIP_CONFIGS["cirr"])]) == 2
    err = one_line_error(capsys)
    assert "CIRR folder not found: data/cirr" in err and "captions/cap.rc2.<split>.json" in err
    assert "checkpoint" not in err


@pytest.mark.parametrize("benchmark", sorted(BLIP_CONFIGS))
def test_eval_names_the_missing_stage_one_checkpoint(benchmark, benchmarks_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["eval", "--config", str(BLIP_CONFIGS[benchmark]), "--root", str(benchmarks_dir / benchmark)])
    assert code == 2
    err = one_line_error(capsys)
    expected = [
        f"stage-one checkpoint not found: checkpoints/{benchmark}_stage1.pt",
        "BLIP_Retrieval",
        "LAVIS",
        f"DOWNLOAD.md of {REFERENCE_REPO}",
        PUBLISHED_CHECKPOINTS[(benchmark, "stage1")],
        "model.stage1",
    ]
    assert [text for text in expected if text not in err] == []


def test_eval_names_the_missing_stage_two_checkpoint(benchmarks_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = config_variant("cirr", tmp_path, {"model": {"stage1": str(GOLDEN_STAGE1)}})
    assert main(["eval", "--config", str(config), "--root", str(benchmarks_dir / "cirr")]) == 2
    err = one_line_error(capsys)
    expected = [
        "stage-two checkpoint not found: checkpoints/cirr_stage2.pt",
        "BLIP_NLVR",
        PUBLISHED_CHECKPOINTS[("cirr", "stage2")],
        "model.stage2",
    ]
    assert [text for text in expected if text not in err] == []


def test_stage_two_scores_under_bf16_autocast_on_cpu():
    """The reference wiring (stage two's own ViT for reference and candidates) scored under CPU bf16 autocast."""
    torch.set_num_threads(1)
    model = create_model("blip-golden", [GOLDEN_STAGE1, GOLDEN_STAGE2])
    inputs = load_file(str(GOLDEN / "inputs.safetensors"))
    expected = load_file(str(GOLDEN / "outputs.safetensors"))["stage2.scores"]
    captions = json.loads((GOLDEN / "config.json").read_text())["fixture"]["captions"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model.stage2_image_tokens(inputs["ref_pixels"])
        cand = model.stage2_image_tokens(inputs["cand_pixels"])
        scores = torch.stack([score_candidates(model, ref[i : i + 1], text, cand) for i, text in enumerate(captions)])
    assert scores.dtype == torch.bfloat16  # autocast really ran the layers in bf16
    torch.testing.assert_close(scores.float(), expected, atol=BF16_ATOL, rtol=0)


def write_cirr_split(root: Path, split: str, with_targets: bool, seed: int) -> None:
    """A CIRR-layout split (release rc2) of small random images with two queries on one img_set."""
    rng = np.random.default_rng(seed)
    folder = root / "img_raw" / split
    folder.mkdir(parents=True)
    names = [f"{split}-{i}-img0" for i in range(TINY_SPLIT_IMAGES)]
    for name in names:
        width, height = (int(v) for v in rng.integers(24, 64, 2))
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    members = names[:SET_SIZE]
    entries = []
    for pairid, (reference, target) in enumerate([(members[0], members[1]), (members[2], members[3])]):
        entry = {"pairid": pairid, "reference": reference, "caption": "make it brighter and add a dog",
                 "img_set": {"id": 0, "members": members}}
        if with_targets:
            entry["target_hard"] = target
        entries.append(entry)
    (root / "captions").mkdir(exist_ok=True)
    (root / "image_splits").mkdir(exist_ok=True)
    (root / "captions" / f"cap.rc2.{split}.json").write_text(json.dumps(entries))
    split_map = {name: f"./{split}/{name}.png" for name in names}
    (root / "image_splits" / f"split.rc2.{split}.json").write_text(json.dumps(split_map))


def test_cirr_config_runs_eval_and_server_files_on_cpu_in_bf16(tmp_path, capsys):
    """`cir eval` with cirr-blip.yaml (golden-size model, bf16 autocast): batched gallery encoding with progress,
    the cache on the second run, val metrics, and the two test1 server files."""
    root = tmp_path / "cirr"
    write_cirr_split(root, "val", with_targets=True, seed=0)
    write_cirr_split(root, "test1", with_targets=False, seed=1)
    golden_model = {"name": "blip-golden", "stage1": str(GOLDEN_STAGE1), "stage2": str(GOLDEN_STAGE2)}
    config = config_variant("cirr", tmp_path, {
        "benchmark": {"root": str(root)},
        "model": {**golden_model, "autocast_bf16": True},
        "stage_one": {"batch_size": 8},
        "stage_two": {"batch_size": 8},
        "cache_dir": str(tmp_path / "cache"),
    })
    torch.set_num_threads(1)
    assert main(["eval", "--config", str(config), "--out", str(tmp_path / "val")]) == 0
    first = capsys.readouterr()
    assert "encoding gallery (stage1)" in first.err and "encoding gallery (stage2)" in first.err
    assert f"{TINY_SPLIT_IMAGES}/{TINY_SPLIT_IMAGES}" in first.err
    metrics = read_json(tmp_path / "val" / "metrics.json")
    assert set(metrics) == {"stage1", "stage2"} and all(0 <= m["recall@50"] <= 100 for m in metrics.values())

    assert main(["eval", "--config", str(config)]) == 0
    assert "cache hit: no gallery image encoded" in capsys.readouterr().out

    server = tmp_path / "server"
    assert main(["eval", "--config", str(config), "--split", "test1", "--out", str(server)]) == 0
    files = sorted(server.glob("cirr_test1_pred_ranks_*.json"))
    test1 = load_benchmark("cirr", root, "test1")
    assert sorted(check_submission_file(test1, path) for path in files) == ["recall", "recall_subset"]


def test_encode_timing_runs_both_precisions_through_the_eval_stages():
    """`python -m cir.bench.encode_timing` at the golden size: every stage timed at each precision, then extrapolated."""
    torch.set_num_threads(1)
    timings = measure("blip-golden", images=3, batch_size=2)
    assert [t.precision for t in timings] == ["fp32", "bf16"]
    for timing in timings:
        assert set(timing.stage_seconds) == {"stage1", "stage2"} and timing.seconds > 0
        assert timing.extrapolate(6 * timing.images) == pytest.approx(6 * timing.seconds)
    assert [duration(s) for s in (45, 750, 4020)] == ["45 s", "12 min 30 s", "1 h 07 min"]
