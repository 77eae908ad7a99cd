"""Checkpoint loading: reference / LAVIS key mapping (full size, without allocating weights), file formats, cir's own
format, and errors that list every missing, unexpected or wrongly shaped key."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cir.errors import CirError, FormatError
from cir.models import checkpoint_hash, create_model, get_model_config, load_model, save_checkpoint
from cir.models.checkpoint import check_part_keys, part_state
from cir.models.convert import convert_reference_state, reference_key_to_cir
from cir.models.factory import build_model

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
STAGE1 = GOLDEN / "stage1.safetensors"
STAGE2 = GOLDEN / "stage2.safetensors"
POSITION_IDS_ELEMENTS = 512  # the reference's persistent position_ids buffer, rebuilt by transformers
LAVIS_TRAINING_EXTRAS = ("image_queue", "text_queue", "idx_queue", "queue_ptr", "ptr_queue")
MOMENTUM_PREFIXES = ("visual_encoder", "text_encoder", "vision_proj", "text_proj")


@pytest.fixture(scope="module")
def reference_states() -> dict[str, dict[str, torch.Tensor]]:
    for path in (STAGE1, STAGE2, GOLDEN / "keys_full_size.json"):
        assert path.is_file(), f"golden fixture missing: {path}"
    return {"stage1": load_file(str(STAGE1)), "stage2": load_file(str(STAGE2))}


@pytest.fixture(scope="module")
def baseline():
    """blip-golden loaded from the fixture safetensors (reference key names)."""
    return create_model("blip-golden", [STAGE1, STAGE2])


@pytest.fixture(scope="module")
def full_size_model():
    """blip-base on the meta device: every parameter shape, no memory."""
    with torch.device("meta"):
        return build_model(get_model_config("blip-base"))


def full_size_keys(stage: str) -> tuple[dict[str, tuple[int, ...]], int]:
    listing = json.loads((GOLDEN / "keys_full_size.json").read_text())[stage]
    return {name: tuple(shape) for name, shape, _dtype in listing["keys"]}, listing["num_elements"]


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_full_size_reference_keys_fit_blip_base(full_size_model, stage):
    found, num_elements = full_size_keys(stage)
    converted, origin = convert_reference_state(found)
    expected = {key: tuple(t.shape) for key, t in part_state(full_size_model, stage).items()}
    check_part_keys(converted, expected, f"keys_full_size.json ({stage})", origin)
    assert len(converted) == len(found) - 1  # only position_ids is dropped
    assert all(t.device.type == "meta" for t in part_state(full_size_model, stage).values())
    model_elements = sum(t.numel() for t in part_state(full_size_model, stage).values())
    assert model_elements + POSITION_IDS_ELEMENTS == num_elements


def test_lavis_retrieval_keys_fit_blip_base(full_size_model):
    """A LAVIS/BLIP retrieval checkpoint: momentum encoders, queues and the ITM head are ignored."""
    found, _ = full_size_keys("stage1")
    lavis = dict(found)
    for key, shape in found.items():
        if key.startswith(MOMENTUM_PREFIXES):
            head, _, rest = key.partition(".")
            lavis[f"{head}_m.{rest}"] = shape
    lavis.update({name: (256, 57600) for name in LAVIS_TRAINING_EXTRAS})
    lavis.update({"itm_head.weight": (2, 768), "itm_head.bias": (2,)})
    converted, origin = convert_reference_state(lavis)
    expected = {key: tuple(t.shape) for key, t in part_state(full_size_model, "stage1").items()}
    check_part_keys(converted, expected, "lavis", origin)


def test_vit_names_map_to_transformers_names():
    assert reference_key_to_cir("visual_encoder.blocks.3.attn.qkv.weight") == "visual_encoder.encoder.layers.3.self_attn.qkv.weight"
    assert reference_key_to_cir("visual_encoder.blocks.11.attn.proj.bias") == "visual_encoder.encoder.layers.11.self_attn.projection.bias"
    assert reference_key_to_cir("visual_encoder.cls_token") == "visual_encoder.embeddings.class_embedding"
    assert reference_key_to_cir("visual_encoder.norm.weight") == "visual_encoder.post_layernorm.weight"
    assert reference_key_to_cir("text_encoder.encoder.layer.6.crossattention.output.merge_layer.weight") == (
        "text_encoder.encoder.layer.6.crossattention.output.merge_layer.weight"
    )
    assert reference_key_to_cir("text_encoder.embeddings.position_ids") is None
    assert reference_key_to_cir("text_encoder_m.encoder.layer.0.output.dense.weight") is None


@pytest.mark.parametrize("layout", ["reference", "lavis", "bare-ddp"])
def test_torch_checkpoint_layouts_load(tmp_path, reference_states, baseline, layout):
    stage1 = dict(reference_states["stage1"])
    if layout == "reference":
        obj = {"epoch": 3, "BLIP_Retrieval": stage1, "optimizer_state_dict": {"state": {}, "param_groups": []}}
    elif layout == "lavis":
        extras = {f"vision_proj_m.{k.split('.')[-1]}": v for k, v in stage1.items() if k.startswith("vision_proj.")}
        extras.update({name: torch.zeros(16, 8) for name in LAVIS_TRAINING_EXTRAS})
        extras.update({"itm_head.weight": torch.zeros(2, 12), "itm_head.bias": torch.zeros(2)})
        obj = {"model": {**stage1, **extras}, "config": {"queue_size": 8}, "epoch": 1}
    else:
        obj = {f"module.{k}": v for k, v in stage1.items()}
    path = tmp_path / "stage1.pth"
    torch.save(obj, path)
    stage2_path = tmp_path / "stage2.pth"
    torch.save({"BLIP_NLVR": reference_states["stage2"]}, stage2_path)
    model = create_model("blip-golden", [path, stage2_path])
    assert same_state(model.stage1, baseline.stage1)
    assert same_state(model.stage2, baseline.stage2)


def write_stage1(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "broken_stage1.safetensors"
    save_file(state, str(path))
    return path


def test_missing_key_is_listed(tmp_path, reference_states):
    state = dict(reference_states["stage1"])
    del state["text_proj.bias"], state["text_encoder.encoder.layer.3.crossattention.self.key.weight"]
    path = write_stage1(tmp_path, state)
    with pytest.raises(FormatError) as info:
        create_model("blip-golden", path)
    message = str(info.value)
    assert str(path) in message and "missing (2)" in message
    assert "text_proj.bias" in message and "text_encoder.encoder.layer.3.crossattention.self.key.weight" in message


def test_unexpected_keys_are_listed_with_file_names(tmp_path, reference_states):
    state = dict(reference_states["stage1"])
    state["visual_encoder.head.weight"] = torch.zeros(10, 48)  # a timm classifier head: no cir counterpart
    state["text_encoder.pooler.dense.bias"] = torch.zeros(12)
    path = write_stage1(tmp_path, state)
    with pytest.raises(FormatError) as info:
        create_model("blip-golden", path)
    message = str(info.value)
    assert "unexpected (2)" in message
    assert "visual_encoder.head.weight" in message and "text_encoder.pooler.dense.bias" in message


def test_wrong_shape_is_listed(tmp_path, reference_states):
    state = dict(reference_states["stage1"])
    state["visual_encoder.pos_embed"] = torch.zeros(1, 17, 48)  # a ViT for another image size
    path = write_stage1(tmp_path, state)
    with pytest.raises(FormatError) as info:
        create_model("blip-golden", path)
    message = str(info.value)
    assert "wrong shape (1)" in message and "visual_encoder.pos_embed: file [1, 17, 48] vs model [1, 5, 48]" in message


def test_unreadable_files_raise_clear_errors(tmp_path):
    with pytest.raises(CirError, match="checkpoint not found"):
        create_model("blip-golden", tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(FormatError, match="garbage.safetensors"):
        create_model("blip-golden", garbage)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(FormatError, match="expected a dict of weights"):
        create_model("blip-golden", listing)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(FormatError, match="does not unpickle"):
        create_model("blip-golden", pickled)
    nested = tmp_path / "nested.pth"
    torch.save({"weights": {"w": torch.zeros(1)}, "step": 3}, nested)
    with pytest.raises(FormatError, match="top-level keys: step, weights"):
        create_model("blip-golden", nested)


def test_cir_checkpoint_round_trip_fp32(tmp_path, baseline):
    path = save_checkpoint(baseline, tmp_path / "golden.safetensors", dtype=None)
    model = create_model("blip-golden", path)
    assert same_state(model.stage1, baseline.stage1) and same_state(model.stage2, baseline.stage2)
    assert model.weights_id == checkpoint_hash(path)
    rebuilt = load_model(path)
    assert rebuilt.name == "blip-golden" and same_state(rebuilt.stage2, baseline.stage2)


def test_cir_checkpoint_fp16_separate_files_and_stable_hash(tmp_path, baseline):
    first = save_checkpoint(baseline, tmp_path / "s1.safetensors", parts=("stage1",))
    second = save_checkpoint(baseline, tmp_path / "s2.safetensors", parts=("stage2",))
    again = save_checkpoint(baseline, tmp_path / "s1-again.safetensors", parts=("stage1",))
    assert checkpoint_hash(first) == checkpoint_hash(again) and len(checkpoint_hash(first)) == 16
    assert load_file(str(first))["stage1.text_proj.weight"].dtype == torch.float16
    model = create_model("blip-golden", [first, second])
    fp16 = {k: v.half().float() for k, v in baseline.stage2.state_dict().items()}
    assert all(torch.equal(v, fp16[k]) for k, v in model.stage2.state_dict().items())
    only_stage1 = create_model("blip-golden", first)
    assert only_stage1.stage2 is None and only_stage1.weights_id == checkpoint_hash(first)
    fresh_stage2 = create_model("blip-golden", first, stages=("stage1", "stage2"))
    assert fresh_stage2.stage2 is not None and fresh_stage2.weights_id is None
    with pytest.raises(FormatError, match="no stage-one weights"):
        create_model("blip-golden", second)
    with pytest.raises(FormatError, match="already given"):
        create_model("blip-golden", [first, again])


def test_cir_checkpoint_for_another_config_is_refused(tmp_path, baseline):
    path = save_checkpoint(baseline, tmp_path / "golden.safetensors", parts=("stage1",))
    with pytest.raises(FormatError, match="differs from 'blip-tiny' in .*embed_dim"):
        create_model("blip-tiny", path)
