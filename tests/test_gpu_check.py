"""The prepared GPU check runs end to end at the tiny size on a CPU (its figures mean nothing here), and its training
steps train what the reference trains and leave the frozen ViTs alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cir.bench import gpu_check
from cir.models import create_model

pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]


def test_tiny_check_writes_every_measurement(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--model", "blip-golden", "--tiny", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "blip-golden" and result["tiny"] and result["weights"] == "random"
    assert result["device_type"] == "cpu" and "CPU" in result["device"]
    for precision in gpu_check.PRECISIONS:
        encoding = result["gallery_encoding"][precision]
        assert encoding["stage1_images_per_s"] > 0 and encoding["stage2_tokens_images_per_s"] > 0
        assert encoding["gallery_images_per_s"] < encoding["stage1_images_per_s"]
        assert result["stage_two"][precision]["ms_per_query_median"] > 0
    assert result["stage_two"]["k"] == gpu_check.TINY.k
    for stage, batch in (("train_stage1", gpu_check.TINY.stage1_batch), ("train_stage2", gpu_check.TINY.stage2_batch)):
        assert result[stage]["batch"] == batch and result[stage]["step_seconds"] > 0
        assert result[stage]["peak_memory_gib"] is None  # no GPU: no allocator peak to report


def test_full_size_is_refused_on_a_cpu(tmp_path):
    with pytest.raises(SystemExit, match="--tiny"):
        gpu_check.main(["--model", "blip-golden", "--device", "cpu", "--out", str(tmp_path / "gpu.json")])


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {key for key, value in module.state_dict().items() if not torch.equal(before[key], value)}


def test_training_steps_train_the_reference_parts_only():
    torch.manual_seed(0)
    model = create_model("blip-golden")
    device, sizes = torch.device("cpu"), gpu_check.TINY
    before1, before2 = snapshot(model.stage1), snapshot(model.stage2)
    loss = gpu_check.stage_one_step(model, sizes, device)()
    assert torch.isfinite(torch.tensor(loss))
    moved = changed(before1, model.stage1)
    assert {"temp", "text_proj.weight", "vision_proj.weight"} <= moved
    assert any(key.startswith("text_encoder.encoder.") for key in moved)
    assert not any(key.startswith("visual_encoder.") for key in moved)

    before1 = snapshot(model.stage1)
    loss = gpu_check.stage_two_step(model, sizes, device)()
    assert torch.isfinite(torch.tensor(loss))
    assert not changed(before1, model.stage1)
    moved = changed(before2, model.stage2)
    assert "cls_head.0.weight" in moved and any(".merge_layer." in key for key in moved)
    assert any(".crossattention.self1." in key for key in moved)
    assert not any(key.startswith("visual_encoder.") for key in moved)


def test_train_memory_measures_a_configs_steps_at_its_own_batches(tmp_path):
    """configs/cirr-blip-train.yaml cut to the golden-size model and small batches: each stage's steps run at the
    config's batch (stage two: the group_size x group_size matrix) and precision, and the measured peak holds at
    least the model's own float32 weights, which are built inside the measured window."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "cirr-blip-train.yaml").read_text())
    cfg["model"] = {"name": "blip-golden", "pretrained": None, "device": "cpu"}
    cfg["train_stage1"]["batch_size"] = 4
    cfg["train_stage2"]["options"]["group_size"] = 3
    config, out = tmp_path / "train.yaml", tmp_path / "memory.json"
    config.write_text(yaml.safe_dump(cfg))
    # in a process of its own, as the command runs: in this one, heap pages freed by earlier tests would be reused
    # without the resident memory growing
    done = subprocess.run([sys.executable, "-m", "cir.bench.train_memory", "--config", str(config), "--out", str(out),
                           "--steps", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    one, two = result["stages"]["stage1"], result["stages"]["stage2"]
    assert (one["batch"], one["pairs"], one["accumulate"]) == (4, 4, 4) and (two["batch"], two["pairs"]) == (3, 9)
    for stage in (one, two):
        assert stage["precision"] == "bf16" and len(stage["step_seconds"]) == 1
        assert 0 < stage["trained_parameters"] < stage["parameters"]  # the ViTs stay frozen
        assert stage["peak_bytes"] >= 4 * stage["parameters"]


def test_train_memory_refuses_fp16_in_one_line(tmp_path, capsys):
    import yaml

    from cir.bench import train_memory

    cfg = yaml.safe_load((REPO / "configs" / "cirr-blip-train.yaml").read_text())
    cfg["model"] = {"name": "blip-golden", "pretrained": None, "device": "cpu"}
    cfg["train_stage1"]["precision"] = "fp16"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert train_memory.main(["--config", str(config), "--out", str(tmp_path / "m.json"), "--stages", "stage1"]) == 2
    assert "fp16" in capsys.readouterr().err and not (tmp_path / "m.json").exists()
