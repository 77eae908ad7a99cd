"""transformers-format BLIP weights: a `BlipForImageTextRetrieval.save_pretrained` folder (what the hub's
`Salesforce/blip-itm-*-coco` hold) loads as cir's stage one, its embeddings equal transformers' own forward pass,
every key is accounted for, a config of other sizes is refused in one line, and a hub id fails in one line offline."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cir.errors import CirError, FormatError
from cir.models import checkpoint_hash, create_model, get_model_config, read_checkpoint
from cir.models.sources import looks_like_hub_id

transformers = pytest.importorskip("transformers")
from transformers import BlipConfig, BlipForImageTextRetrieval  # noqa: E402

EMBED_ATOL = 1e-5
CAPTIONS = ["Has two dogs instead of one, and the grass is greener.", "change colour to RED", "a close-up at night"]


def blip_config(name: str = "blip-golden", vision_eps: float = 1e-6) -> BlipConfig:
    """The transformers config with the sizes of the registered cir config `name`."""
    cir = get_model_config(name)
    vision, text = cir.vision, cir.text
    return BlipConfig(
        vision_config=dict(
            hidden_size=vision.width, intermediate_size=vision.width * vision.mlp_ratio,
            num_hidden_layers=vision.depth, num_attention_heads=vision.heads, image_size=vision.image_size,
            patch_size=vision.patch_size, layer_norm_eps=vision_eps,
        ),
        text_config=dict(
            vocab_size=text.vocab_size, hidden_size=text.hidden_size, encoder_hidden_size=vision.width,
            intermediate_size=text.intermediate_size, num_hidden_layers=text.num_layers,
            num_attention_heads=text.num_heads, max_position_embeddings=text.max_positions,
        ),
        image_text_hidden_size=cir.embed_dim,
    )


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every float parameter drawn at random (as the golden fixtures do): transformers' init leaves LayerNorms at
    1/0, biases at 0 and the ViT near zero, which would hide wiring mistakes."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if "norm" in name.lower() and name.endswith("weight"):
            param.copy_(1 + 0.2 * noise)
        elif param.dim() >= 2 and "embeddings." not in name:
            param.copy_(noise / math.sqrt(param[0].numel()))
        elif "embedding" in name:
            param.copy_(0.5 * noise)
        else:
            param.copy_(0.2 * noise)


def save_blip(folder: Path, config: BlipConfig | None = None, **save_options) -> BlipForImageTextRetrieval:
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(config or blip_config()).eval()
    randomise(model)
    model.save_pretrained(folder, **save_options)
    return model


def edit_config(folder: Path, section: str | None, key: str, value) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    (data[section] if section else data)[key] = value
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, BlipForImageTextRetrieval]:
    folder = tmp_path_factory.mktemp("blip-itm")
    return folder, save_blip(folder)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_embeddings_equal_transformers_forward(saved, pixels):
    folder, hf = saved
    model = create_model("blip-golden", pretrained=str(folder))
    assert model.stage2 is None and model.weights_id == checkpoint_hash(folder)
    input_ids, mask = model.tokenizer(CAPTIONS)
    assert (input_ids[:, 0] == model.tokenizer.enc_id).all()  # BLIP's [ENC], not the [CLS] transformers' processor leaves
    with torch.no_grad():
        tokens = model.stage1.image_tokens(pixels)
        image_emb = model.stage1.image_embedding(tokens)
        fused = model.stage1.fuse(tokens, input_ids, mask)
        query_emb = model.stage1.query_embedding(fused)

        hf_tokens = hf.vision_model(pixel_values=pixels).last_hidden_state
        hf_image_emb = F.normalize(hf.vision_proj(hf_tokens[:, 0]), dim=-1)
        # the ITM path: the text encoder cross-attends to the image tokens; its first token, projected
        itm = hf(input_ids=input_ids, pixel_values=pixels, attention_mask=mask, use_itm_head=True)
        hf_query_emb = F.normalize(hf.text_proj(itm.question_embeds[:, 0]), dim=-1)
        with_cls = input_ids.clone()
        with_cls[:, 0] = model.tokenizer.cls_id
        cls_emb = F.normalize(hf.text_proj(hf(input_ids=with_cls, pixel_values=pixels, attention_mask=mask)
                                           .question_embeds[:, 0]), dim=-1)

    torch.testing.assert_close(tokens, hf_tokens, atol=EMBED_ATOL, rtol=0)
    torch.testing.assert_close(image_emb, hf_image_emb, atol=EMBED_ATOL, rtol=0)
    torch.testing.assert_close(fused, itm.question_embeds, atol=EMBED_ATOL, rtol=0)
    torch.testing.assert_close(query_emb, hf_query_emb, atol=EMBED_ATOL, rtol=0)
    assert (query_emb - cls_emb).abs().max() > 100 * EMBED_ATOL  # the first-token convention matters


def test_every_key_is_accounted_for(saved):
    folder, hf = saved
    contents = read_checkpoint(folder)
    assert contents.source == "transformers" and set(contents.parts) == {"stage1"}
    assert set(contents.dropped) == {"itm_head.weight", "itm_head.bias"}
    assert all("matching head" in reason for reason in contents.dropped.values())
    assert set(contents.kept_initial["stage1"]) == {"temp"}
    loaded = set(contents.origin["stage1"].values())
    assert loaded | set(contents.dropped) == set(hf.state_dict())  # nothing silently skipped
    assert contents.origin["stage1"]["visual_encoder.encoder.layers.1.self_attn.qkv.weight"] == (
        "vision_model.encoder.layers.1.self_attn.qkv.weight"
    )
    model = create_model("blip-golden", folder)
    assert model.stage1.temp.item() == pytest.approx(get_model_config("blip-golden").temp_init)


@pytest.mark.parametrize("layout", ["torch-bin", "sharded"])
def test_other_weight_layouts_load_the_same(tmp_path, saved, pixels, layout):
    folder, hf = saved
    if layout == "torch-bin":
        (tmp_path / "config.json").write_text((folder / "config.json").read_text())
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        hf.save_pretrained(tmp_path, max_shard_size="200KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    reference = create_model("blip-golden", folder)
    model = create_model("blip-golden", tmp_path)
    state, expected = model.stage1.state_dict(), reference.stage1.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)


def test_other_sizes_are_refused_in_one_line(tmp_path):
    save_blip(tmp_path)
    edit_config(tmp_path, "text_config", "num_attention_heads", 4)
    with pytest.raises(FormatError) as error:
        create_model("blip-golden", tmp_path)
    message = str(error.value)
    assert "\n" not in message and "config.json" in message
    assert "text_config.num_attention_heads = 4 but text.num_heads = 3 in model 'blip-golden'" in message
    edit_config(tmp_path, "text_config", "num_attention_heads", 3)
    edit_config(tmp_path, None, "image_text_hidden_size", 32)
    edit_config(tmp_path, "vision_config", "hidden_size", 64)
    with pytest.raises(FormatError, match=r"vision_config.hidden_size = 64 but vision.width = 48 .*\(and 1 more\)"):
        create_model("blip-golden", tmp_path)


def test_transformers_vision_eps_is_kept_as_blip(tmp_path, caplog):
    """transformers' hub configs say 1e-5 for the ViT LayerNorm where BLIP trained with 1e-6: loaded, not refused."""
    save_blip(tmp_path, blip_config(vision_eps=1e-5))
    with caplog.at_level(logging.WARNING, logger="cir.models.checkpoint"):
        model = create_model("blip-golden", tmp_path)
    assert "vision_config.layer_norm_eps = 1e-05" in caplog.text
    assert model.stage1.visual_encoder.post_layernorm.eps == 1e-6


def test_folders_that_are_not_blip_retrieval_are_refused(tmp_path, saved):
    folder, _ = saved
    with pytest.raises(FormatError, match="no config.json"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(FormatError, match="no weights"):
        read_checkpoint(tmp_path)
    edit_config(tmp_path, None, "architectures", ["BlipForConditionalGeneration"])
    with pytest.raises(FormatError, match="BlipForConditionalGeneration; cir reads BlipForImageTextRetrieval"):
        read_checkpoint(tmp_path)
    edit_config(tmp_path, None, "model_type", "clip")
    with pytest.raises(FormatError, match="cir reads BlipForImageTextRetrieval"):
        read_checkpoint(tmp_path)


def test_hub_id_offline_fails_in_one_line(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CirError) as error:
        create_model("blip-golden", "Salesforce/blip-itm-base-coco")
    message = str(error.value)
    assert "\n" not in message and not isinstance(error.value, FormatError)
    assert "'Salesforce/blip-itm-base-coco'" in message and "hub cannot be reached" in message
    assert "local folder" in message


def test_hub_id_detection_leaves_paths_and_tags_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_hub_id("Salesforce/blip-itm-large-coco")
    assert not looks_like_hub_id("runs/stage1.safetensors") and not looks_like_hub_id("/abs/folder")
    assert not looks_like_hub_id("synth") and not looks_like_hub_id("a/b/c")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not looks_like_hub_id("org/name")  # an existing folder is a path
    with pytest.raises(CirError, match="checkpoint not found"):
        create_model("blip-golden", "runs/stage1.safetensors")
    with pytest.raises(CirError, match="unknown pretrained tag 'nope'"):
        create_model("blip-golden", "nope")


@pytest.mark.parametrize("source", ["transformers", "reference"])
def test_stage_two_initialised_from_stage_one_weights(saved, source):
    """Training init: stage two from stage-one weights, as the reference loads BLIP's model_base.pth into BLIP_NLVR."""
    from cir.models.checkpoint import apply_checkpoints, stage2_init_from

    golden = Path(__file__).resolve().parents[2] / "shared" / "golden" / "stage1.safetensors"
    path = saved[0] if source == "transformers" else golden
    torch.manual_seed(0)
    model = create_model("blip-golden", path, stages=("stage1", "stage2"))
    merge_before = model.stage2.text_encoder.encoder.layer[7].crossattention.output.merge_layer.weight.clone()
    init = stage2_init_from(read_checkpoint(path), model)
    apply_checkpoints(model, [init])  # every stage-two key given or kept on purpose, every shape checked
    one, two = model.stage1.state_dict(), model.stage2.state_dict()
    layer = "text_encoder.encoder.layer.7.crossattention"
    for branch in "01":
        assert torch.equal(two[f"{layer}.self{branch}.key.weight"], one[f"{layer}.self.key.weight"])
        assert torch.equal(two[f"{layer}.output.dense{branch}.bias"], one[f"{layer}.output.dense.bias"])
    for norm in "AB":
        assert torch.equal(two[f"{layer}.output.LayerNorm{norm}.weight"], one[f"{layer}.output.LayerNorm.weight"])
    assert torch.equal(two["visual_encoder.post_layernorm.weight"], one["visual_encoder.post_layernorm.weight"])
    assert torch.equal(two["text_encoder.encoder.layer.0.output.dense.weight"],
                       one["text_encoder.encoder.layer.0.output.dense.weight"])
    assert torch.equal(model.stage2.text_encoder.encoder.layer[7].crossattention.output.merge_layer.weight, merge_before)
    assert set(init.kept_initial["stage2"]) == {k for k in two if ".merge_layer." in k or k.startswith("cls_head.")}
    assert {"text_proj.weight", "vision_proj.bias"} <= set(init.dropped)


def test_stage_two_init_leaves_what_stage_two_shares(tmp_path):
    """blip-tiny's stage two shares stage one's ViT and word table: neither comes from the file."""
    from cir.models import save_checkpoint
    from cir.models.checkpoint import TIED_STAGE2_KEY, apply_checkpoints, stage2_init_from

    torch.manual_seed(0)
    model = create_model("blip-tiny")
    path = save_checkpoint(model, tmp_path / "stage1.safetensors", dtype=None, parts=("stage1",))
    init = stage2_init_from(read_checkpoint(path), model)
    assert init.dropped[TIED_STAGE2_KEY].startswith("stage two's word embeddings")
    assert any(key.startswith("visual_encoder.") and "ViT" in why for key, why in init.dropped.items())
    apply_checkpoints(model, [init])
    assert model.stage2.text_encoder.embeddings.word_embeddings is model.stage1.text_encoder.embeddings.word_embeddings


def test_run_config_names_a_transformers_folder(saved):
    """`model.stage1` (or `model.pretrained`) of a run config, and so `train_stage1.options.init_from_model`."""
    from cir.config import ModelSettings
    from cir.models import model_from_settings

    folder, _ = saved
    for settings in (ModelSettings(name="blip-golden", pretrained=None, stage1=str(folder)),
                     ModelSettings(name="blip-golden", pretrained=str(folder))):
        model = model_from_settings(settings)
        assert model.weights_id == checkpoint_hash(folder) and model.stage2 is None
