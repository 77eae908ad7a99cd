"""Model family: registry and configs, tokenizer, preprocessing, and the shipped `blip-tiny` size end to end."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cir.errors import CirError, FormatError
from cir.models import (
    BLIP_MEAN,
    BLIP_STD,
    BlipTokenizer,
    ImagePreprocessor,
    ModelConfig,
    create_model,
    get_model_config,
    list_models,
    register_model,
    save_checkpoint,
)
from cir.models.preprocess import target_pad

SHIPPED_BUDGET_BYTES = 25_000_000  # stage-one + stage-two files of blip-tiny, shipped inside the package


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("blip-tiny")


@pytest.fixture(scope="module")
def tokenizer() -> BlipTokenizer:
    return BlipTokenizer()


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_registry_lists_and_refuses_unknown_names():
    assert {"blip-base", "blip-golden", "blip-tiny"} <= set(list_models())
    with pytest.raises(CirError, match="unknown model 'blip-huge'.*blip-base"):
        get_model_config("blip-huge")


def test_register_model_and_config_round_trip(monkeypatch):
    from cir.models import registry
    from cir.registry import Registry

    base = get_model_config("blip-tiny")
    monkeypatch.setattr(registry, "_configs", Registry("model"))  # keep the test's name out of the real registry
    wider = register_model("blip-tiny-wide-test", dataclasses.replace(base, embed_dim=64))
    assert get_model_config("blip-tiny-wide-test") is wider and wider.name == "blip-tiny-wide-test"
    assert ModelConfig.from_dict(wider.to_dict()) == wider
    with pytest.raises(FormatError, match="unknown VisionConfig fields: colour"):
        ModelConfig.from_dict({**base.to_dict(), "vision": {**base.to_dict()["vision"], "colour": 1}})


def test_builtin_config_sizes():
    base = get_model_config("blip-base")
    assert (base.vision.image_size, base.vision.patch_size, base.vision.width, base.vision.depth, base.vision.heads) == (384, 16, 768, 12, 12)
    assert (base.text.hidden_size, base.text.num_layers, base.text.num_heads, base.text.intermediate_size) == (768, 12, 12, 3072)
    assert (base.embed_dim, base.stage2_average_layers, base.text.vocab_size) == (256, 6, 30524)
    assert (base.image_mean, base.image_std) == (BLIP_MEAN, BLIP_STD)
    assert not base.share_stage2_vision and not base.tie_stage2_word_embeddings
    tiny = get_model_config("blip-tiny")
    assert (tiny.vision.image_size, tiny.vision.patch_size, tiny.vision.width, tiny.vision.depth, tiny.vision.heads) == (63, 21, 192, 4, 3)
    assert tiny.vision.num_tokens == 1 + 3 * 3  # one patch per cell of the synthetic 3 x 3 grid
    assert (tiny.text.hidden_size, tiny.text.num_layers, tiny.text.num_heads, tiny.text.intermediate_size) == (128, 4, 4, 512)
    assert (tiny.encoder_width, tiny.embed_dim, tiny.stage2_average_layers) == (192, 128, tiny.text.num_layers // 2)
    assert tiny.share_stage2_vision and tiny.tie_stage2_word_embeddings


def test_tokenizer_ids_padding_and_helpers(tokenizer):
    assert len(tokenizer) == 30524 and (tokenizer.dec_id, tokenizer.enc_id) == (30522, 30523)
    ids, mask = tokenizer(["A Café!", "two dogs"])
    assert ids.dtype == mask.dtype == torch.int64
    assert ids[:, 0].tolist() == [tokenizer.enc_id, tokenizer.enc_id]
    assert [tokenizer.id_to_token(i) for i in ids[0].tolist()] == ["[ENC]", "a", "cafe", "!", "[SEP]"]
    assert ids[1].tolist()[-1] == tokenizer.pad_id and mask[1].tolist() == [1, 1, 1, 1, 0]
    assert tokenizer.wordpiece_ids("greener") == [tokenizer.token_to_id("greene"), tokenizer.token_to_id("##r")]
    long_ids, long_mask = tokenizer(["word " * 600])
    assert long_ids.shape == (1, 512) and long_ids[0, -1].item() == tokenizer.sep_id and bool(long_mask.all())
    empty_ids, _ = tokenizer([])
    assert empty_ids.shape == (0, 0)


def test_tokenizer_matches_pure_python_wordpiece(tokenizer):
    """The tokenizers-backed BertTokenizer agrees with transformers' pure-Python (legacy slow) one."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from cir.models.tokenizer import default_vocab_path

    slow = BertTokenizerLegacy(vocab_file=str(default_vocab_path()), do_lower_case=True)
    texts = [
        "Naïve résumé: Æsir straße, ﬁne ligature",
        "日本語 mixed with English\ttabs\u200band zero-width",
        "unbelievably-long-" + "x" * 120,
        "emoji 🙂 and ¿questions? (brackets) [SEP] literal",
    ]
    for text in texts:
        expected = slow.encode(text, add_special_tokens=False)
        assert tokenizer.wordpiece_ids(text) == expected, text


def test_target_pad_only_pads_elongated_images():
    wide = Image.new("RGB", (100, 40), (255, 255, 255))
    padded = target_pad(wide, 1.25)
    assert padded.size == (100, 40 + 2 * 20)  # 100 / 1.25 = 80: 20 px of black above and below
    assert np.asarray(padded)[0].max() == 0 and np.asarray(padded)[40].min() == 255
    squareish = Image.new("RGB", (60, 50))
    assert target_pad(squareish, 1.25) is squareish


def test_preprocessor_shapes_and_normalisation():
    prep = ImagePreprocessor(64, BLIP_MEAN, BLIP_STD)
    grey = Image.new("L", (30, 90), 128)
    pixels = prep([grey, *random_images([(200, 50)])])
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(BLIP_MEAN)) / torch.tensor(BLIP_STD)
    torch.testing.assert_close(pixels[0, :, 32, 32], expected)


def test_tiny_builds_with_shared_vision_and_tied_embeddings(tiny):
    assert tiny.stage2 is not None and tiny.name == "blip-tiny" and tiny.weights_id is None
    assert not hasattr(tiny.stage2, "visual_encoder")
    assert tiny.stage2.text_encoder.embeddings.word_embeddings is tiny.stage1.text_encoder.embeddings.word_embeddings
    with pytest.raises(RuntimeError, match="shares stage one's ViT"):
        tiny.stage2.image_tokens(torch.zeros(1, 3, 64, 64))
    assert not tiny.stage1.training and not tiny.stage2.training


def test_tiny_size_fits_the_shipping_budget(tiny, tmp_path):
    count = tiny.num_parameters()
    stage1_count = sum(p.numel() for p in tiny.stage1.parameters())
    assert 8_000_000 < count < 10_000_000 and stage1_count < count
    stage1 = save_checkpoint(tiny, tmp_path / "tiny-stage1.safetensors", parts=("stage1",))
    stage2 = save_checkpoint(tiny, tmp_path / "tiny-stage2.safetensors", parts=("stage2",))
    total = stage1.stat().st_size + stage2.stat().st_size
    assert total <= SHIPPED_BUDGET_BYTES
    assert abs(total - 2 * count) < 100_000  # fp16, the tied table stored once, plus headers
    umask = os.umask(0)
    os.umask(umask)
    assert stage1.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as any new file, not mkstemp's 0600
    reloaded = create_model("blip-tiny", [stage1, stage2])
    assert reloaded.stage2.text_encoder.embeddings.word_embeddings is reloaded.stage1.text_encoder.embeddings.word_embeddings


def test_tiny_forward_both_stages(tiny):
    images = random_images([(64, 64), (90, 40), (30, 100), (50, 45)])
    with torch.no_grad():
        tokens = tiny.stage1.image_tokens(tiny.preprocess(images))
        assert tokens.shape == (4, tiny.config.vision.num_tokens, 192)
        cand_emb = tiny.stage1.image_embedding(tokens)
        ids, mask = tiny.tokenizer(["make it red", "same shirt but with long sleeves and a collar"])
        fused = tiny.stage1.fuse(tokens[:2], ids, mask)
        query = tiny.stage1.query_embedding(fused)
        assert fused.shape == (2, ids.shape[1], 128)
        assert query.shape == (2, 128) and cand_emb.shape == (4, 128)
        torch.testing.assert_close(query.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(cand_emb.norm(dim=-1), torch.ones(4))
        cand_tokens = tiny.stage2_image_tokens(tiny.preprocess(images))
        ref = tokens[1:2]
        broadcast = tiny.stage2.score(fused[1:], ids[1:], mask[1:], cand_tokens, ref)
        aligned = tiny.stage2.score(
            fused[1:].expand(4, -1, -1), ids[1:].expand(4, -1), mask[1:].expand(4, -1), cand_tokens, ref.expand(4, -1, -1)
        )
        assert broadcast.shape == (4,) and torch.isfinite(broadcast).all()
        torch.testing.assert_close(broadcast, aligned, atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="broadcasts one query"):
            tiny.stage2.score(fused, ids, mask, cand_tokens[:3], ref)


def test_tiny_stage_two_reads_what_changed_from_the_reference(tiny):
    """blip-tiny's stage two reads the candidate and its difference from the reference: the reference matters,
    and leaving it out is an error rather than a silent fallback to the reference wiring."""
    assert tiny.config.stage2_reads_reference and not get_model_config("blip-base").stage2_reads_reference
    with torch.no_grad():
        tokens = tiny.stage1.image_tokens(tiny.preprocess(random_images([(64, 64)] * 4)))
        ids, mask = tiny.tokenizer(["make it red"])
        fused = tiny.stage1.fuse(tokens[:1], ids, mask)
        memory = tiny.stage2.memory(tokens[1:], tokens[:1])
        assert memory.shape == (3, 2 * tokens.shape[1], tokens.shape[2])
        torch.testing.assert_close(memory[:, tokens.shape[1] :], tokens[1:] - tokens[:1])
        own = tiny.stage2.score(fused, ids, mask, tokens[1:], tokens[:1])
        other = tiny.stage2.score(fused, ids, mask, tokens[1:], tokens[3:4])
        assert not torch.allclose(own, other)
        with pytest.raises(ValueError, match="pass ref_tokens"):
            tiny.stage2.score(fused, ids, mask, tokens[1:])
        with pytest.raises(ValueError, match="reference tokens have 2 rows"):
            tiny.stage2.memory(tokens[1:], tokens[:2])
