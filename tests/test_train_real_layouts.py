"""Training on a real benchmark layout: a FashionIQ tree with the real dress/shirt/toptee captions and placeholder
images, trained from the reference-recipe config (cut to the tiny model, one epoch, CPU), the three categories
together, then evaluated per category and scored over the three runs. And memory: a training epoch's peak RSS does
not follow the number of training images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cir.cli import main

REPO = Path(__file__).resolve().parents[1]


def training_config(tree: Path, work: Path) -> dict:
    """configs/fashioniq-blip-train.yaml with the tiny model on the CPU, one epoch, the fake tree."""
    cfg = yaml.safe_load((REPO / "configs" / "fashioniq-blip-train.yaml").read_text())
    cfg["benchmark"]["root"] = str(tree)
    cfg["model"] = {"name": "blip-tiny", "pretrained": None, "device": "cpu"}
    cfg["cache_dir"] = str(work / "cache")
    one = cfg["train_stage1"]
    one.update(out=str(work / "stage1"), epochs=1, batch_size=32, accumulate=2, precision="bf16", workers=1, threads=2)
    one["options"].update(init_from_model=False, val_queries=30)  # no pre-trained weights at the tiny size
    two = cfg["train_stage2"]
    two.update(out=str(work / "stage2"), epochs=1, batch_size=8, precision="fp32", workers=0, threads=2)
    two["options"].update(stage1=str(work / "stage1" / "stage1.safetensors"), group_size=8, calibration_queries=30,
                          val_queries=30)
    del two["options"]["init_from"]
    return cfg


def test_fashioniq_trains_all_categories_then_evaluates_and_scores_per_category(fashioniq_tree, tmp_path, capsys) -> None:
    work = tmp_path / "runs"
    cfg = training_config(fashioniq_tree, work)
    config = tmp_path / "fiq-train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", "stage1", "--config", str(config)]) == 0
    first = json.loads((work / "stage1" / "metrics.jsonl").read_text().splitlines()[-1])
    assert first["epoch"] == 1 and first["loss"] > 0
    assert_vision_frozen(work / "stage1" / "state.pt", seed=one_seed(cfg))
    assert main(["train", "stage2", "--config", str(config)]) == 0
    assert (work / "stage2" / "stage2.safetensors").is_file()

    cfg["model"].update(stage1=first_path(work, "stage1"), stage2=first_path(work, "stage2"))
    cfg["benchmark"]["category"] = None
    evaluation = tmp_path / "fiq-eval.yaml"
    evaluation.write_text(yaml.safe_dump(cfg))
    for category in ("dress", "shirt", "toptee"):
        assert main(["eval", "--config", str(evaluation), "--category", category, "--out", str(work / category)]) == 0
        metrics = json.loads((work / category / "metrics.json").read_text())
        assert set(metrics) == {"stage1", "stage2"} and 0 <= metrics["stage2"]["recall@50"] <= 100
    capsys.readouterr()
    scored = tmp_path / "scored.json"
    assert main(["score", "fashioniq", "--root", str(fashioniq_tree), "--run",
                 str(work / "{category}" / "run.stage2.json"), "--json", str(scored)]) == 0
    report = json.loads(scored.read_text())
    assert "mean recall@10" in json.dumps(report) and "FashionIQ" in capsys.readouterr().out


def one_seed(cfg: dict) -> int:
    return cfg["train_stage1"]["seed"]


def assert_vision_frozen(state: Path, seed: int) -> None:
    """The recipe's freeze_vision: the ViT left as initialised, the projections and text encoder trained."""
    import torch

    from cir.models import create_model
    from cir.train.loop import seed_everything

    seed_everything(seed)
    start = create_model("blip-tiny", stages=("stage1",)).stage1.state_dict()
    trained = torch.load(state, weights_only=False)["module"]
    vision = [k for k in start if k.startswith("visual_encoder.")]
    assert vision and all(torch.equal(trained[f"stage1.{k}"], start[k]) for k in vision)
    assert not torch.equal(trained["stage1.text_proj.weight"], start["text_proj.weight"])


def first_path(work: Path, stage: str) -> str:
    return str(work / stage / f"{stage}.safetensors")


def test_random_captions_need_a_benchmark_with_variants(synth_tiny, tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"benchmark: {{name: cirr, release: synth, root: {synth_tiny}, split: val}}\n"
        "model: {name: blip-tiny, pretrained: null}\n"
        f"cache_dir: {tmp_path / 'cache'}\n"
        f"train_stage1: {{out: {tmp_path / 'out'}, epochs: 1, max_queries: 16, options: {{random_captions: true}}}}\n"
    )
    assert main(["train", "stage1", "--config", str(config)]) == 2


PEAK_RSS = """
import resource, sys
from cir.cli import main
code = main(["train", "stage1", "--config", sys.argv[1]])
print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_rss_kb(tree: Path, work: Path) -> int:
    work.mkdir()
    cfg = training_config(tree, work)
    cfg["benchmark"]["category"] = "dress"
    one = cfg["train_stage1"]
    one.update(batch_size=32, accumulate=1, precision="fp32", workers=0)  # images read in the measured process
    one["options"].update(random_captions=False, val_queries=10)
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(config)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("peak_kb")[-1].split()[0])


def test_peak_memory_of_an_epoch_does_not_follow_the_number_of_training_images(benchmarks_dir, tmp_path) -> None:
    """Two trees with the same 2,400 real dress training captions (so the same 75 steps), whose pictures are about
    1,000 and about 4,000 distinct images. Held as preprocessed fp16 tensors (63 px, as the old loader held every
    training image), the 3,000 more images would be 67 MB; streamed, peak RSS must differ by less than the size of the
    annotation lists (the larger tree's caption and split files, 0.35 MB), plus 12 MB for the peak's own variation
    from run to run: four runs here peaked at 769 and 763 MB (1,000 images) and 767 and 766 MB (4,000 images), and
    one in-test pair differed by 9.5 MB."""
    from conftest import write_fashioniq_tree

    trees = {n: write_fashioniq_tree(benchmarks_dir / "fashioniq", tmp_path / f"fiq{n}", 2400, 10, images=n)
             for n in (1000, 4000)}
    distinct = {n: len(json.loads((tree / "image_splits" / "split.dress.train.json").read_text()))
                for n, tree in trees.items()}
    assert 900 < distinct[1000] <= 1000 and 3800 < distinct[4000] <= 4000
    large = trees[4000]
    annotations = sum((large / f).stat().st_size for f in ("captions/cap.dress.train.json", "image_splits/split.dress.train.json"))
    held = (distinct[4000] - distinct[1000]) * 3 * 63 * 63 * 2
    difference = (peak_rss_kb(large, tmp_path / "large") - peak_rss_kb(trees[1000], tmp_path / "small")) * 1024
    print(f"peak RSS difference {difference / 2**20:.2f} MB; annotation files {annotations / 2**20:.2f} MB; "
          f"as tensors {held / 2**20:.1f} MB")
    assert difference < annotations + 12 * 2**20 < held / 4
