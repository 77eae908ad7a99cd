"""Parity with the reference implementation on the golden fixtures (../shared/golden, README section 4).

Built at the fixture config ("blip-golden") and loaded from the fixture state dicts, cir must reproduce every
stored output.  Tolerances (fp32 CPU, as the fixture README suggests): 1e-4 absolute on hidden states and ViT tokens,
2e-5 on embeddings, similarities and scores, 1e-5 on preprocessed pixels; ids and rankings exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cir.models import create_model

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
HIDDEN_ATOL = 1e-4
EMBED_ATOL = 2e-5
PIXEL_ATOL = 1e-5
NUM_QUERIES = 3


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def golden() -> dict:
    for name in ("stage1.safetensors", "stage2.safetensors", "inputs.safetensors", "outputs.safetensors", "config.json"):
        assert (GOLDEN / name).is_file(), f"golden fixture missing: {GOLDEN / name}"
    torch.set_num_threads(1)
    model = create_model("blip-golden", [GOLDEN / "stage1.safetensors", GOLDEN / "stage2.safetensors"])
    return {
        "model": model,
        "inputs": load_file(str(GOLDEN / "inputs.safetensors")),
        "outputs": load_file(str(GOLDEN / "outputs.safetensors")),
        "config": json.loads((GOLDEN / "config.json").read_text()),
    }


@pytest.fixture(scope="module")
def stage1_run(golden) -> dict:
    """Stage one as validate.py runs it: all captions as one padded batch over the stage-one ViT tokens."""
    model, x = golden["model"], golden["inputs"]
    stage1 = model.stage1
    with torch.no_grad():
        ref = stage1.image_tokens(x["ref_pixels"])
        cand = stage1.image_tokens(x["cand_pixels"])
        ids, mask = model.tokenizer(golden["config"]["fixture"]["captions"])
        fused = stage1.fuse(ref, ids, mask)
        query = stage1.query_embedding(fused)
        cand_emb = stage1.image_embedding(cand)
        return {
            "ref_vit_tokens": ref,
            "cand_vit_tokens": cand,
            "input_ids": ids,
            "attention_mask": mask,
            "text_embeddings": stage1.text_embeddings(ids),
            "fused_last_hidden_state": fused,
            "query_emb": query,
            "cand_emb": cand_emb,
            "ref_emb": stage1.image_embedding(ref),
            "similarity": query @ cand_emb.T,
        }


@pytest.fixture(scope="module")
def stage2_run(golden) -> dict:
    """Stage two as validate_stage2.py runs it: per query, z_t from the stage-two ViT's reference tokens."""
    model, x = golden["model"], golden["inputs"]
    captions = golden["config"]["fixture"]["captions"]
    stage1, stage2 = model.stage1, model.stage2
    layers = stage2.text_encoder.encoder.layer
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out, index=index: captured.__setitem__(index, out))
        for index, layer in enumerate(layers)
    ]
    out: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            ref = model.stage2_image_tokens(x["ref_pixels"])
            cand = model.stage2_image_tokens(x["cand_pixels"])
            out["ref_vit_tokens"], out["cand_vit_tokens"] = ref, cand
            for i, caption in enumerate(captions):
                ids, mask = model.tokenizer([caption])
                z_t = stage1.fuse(ref[i : i + 1], ids, mask)
                h0, h1 = stage2.branch_states(z_t, ids, mask, cand)
                features = stage2.pair_features(z_t, ids, mask, cand)
                out.update({
                    f"input_ids.q{i}": ids,
                    f"attention_mask.q{i}": mask,
                    f"z_t.q{i}": z_t,
                    f"text_embeddings.q{i}": stage2.text_encoder.embeddings(input_ids=ids).expand(len(cand), -1, -1),
                    f"branch0_last_hidden_state.q{i}": h0,
                    f"branch1_last_hidden_state.q{i}": h1,
                    f"pair_features.q{i}": features,
                    f"head_logits.q{i}": stage2.cls_head(features),
                    f"scores.q{i}": stage2.score(z_t, ids, mask, cand),
                })
                if i == 0:
                    for index, (b0, b1) in captured.items():
                        out[f"q0.layer{index}.branch0"], out[f"q0.layer{index}.branch1"] = b0, b1
    finally:
        for hook in hooks:
            hook.remove()
    out["head_logits"] = torch.stack([out[f"head_logits.q{i}"] for i in range(NUM_QUERIES)])
    out["scores"] = torch.stack([out[f"scores.q{i}"] for i in range(NUM_QUERIES)])
    return out


def test_token_ids_match_reference(golden, stage1_run, stage2_run):
    x, tok = golden["inputs"], golden["model"].tokenizer
    assert torch.equal(stage1_run["input_ids"], x["stage1.input_ids"])
    assert torch.equal(stage1_run["attention_mask"], x["stage1.attention_mask"])
    for i in range(NUM_QUERIES):
        assert torch.equal(stage2_run[f"input_ids.q{i}"], x[f"stage2.input_ids.q{i}"])
        assert torch.equal(stage2_run[f"attention_mask.q{i}"], x[f"stage2.attention_mask.q{i}"])
        pieces = [tok.id_to_token(t) for t in x[f"stage2.input_ids.q{i}"][0].tolist()]
        assert pieces == golden["config"]["fixture"]["tokens"][f"q{i}"]


def test_preprocessing_matches_reference_pixels(golden):
    x, preprocess = golden["inputs"], golden["model"].preprocess
    for kind, count in (("ref", 3), ("cand", 5)):
        images = [Image.fromarray(x[f"raw.{kind}_image_uint8.{i}"].numpy()) for i in range(count)]
        close(preprocess(images), x[f"{kind}_pixels"], PIXEL_ATOL)


@pytest.mark.parametrize("name", ["ref_vit_tokens", "cand_vit_tokens", "text_embeddings", "fused_last_hidden_state"])
def test_stage1_hidden_states(golden, stage1_run, name):
    close(stage1_run[name], golden["outputs"][f"stage1.{name}"], HIDDEN_ATOL)


@pytest.mark.parametrize("name", ["query_emb", "cand_emb", "ref_emb", "similarity"])
def test_stage1_embeddings_and_similarity(golden, stage1_run, name):
    close(stage1_run[name], golden["outputs"][f"stage1.{name}"], EMBED_ATOL)


def test_stage1_ranking(golden, stage1_run):
    ranking = torch.argsort(1 - stage1_run["similarity"], dim=1, stable=True)
    assert torch.equal(ranking, golden["outputs"]["stage1.ranking"])


def test_stage2_vit_tokens_and_z_t(golden, stage2_run):
    y = golden["outputs"]
    for name in ("ref_vit_tokens", "cand_vit_tokens"):
        close(stage2_run[name], y[f"stage2.{name}"], HIDDEN_ATOL)
    for i in range(NUM_QUERIES):
        close(stage2_run[f"z_t.q{i}"], y[f"stage2.z_t.q{i}"], HIDDEN_ATOL)
        close(stage2_run[f"text_embeddings.q{i}"], y[f"stage2.text_embeddings.q{i}"], HIDDEN_ATOL)


def test_stage2_per_layer_branch_states(golden, stage2_run):
    y = golden["outputs"]
    layer_keys = sorted(key for key in y if key.startswith("stage2.q0.layer"))
    assert len(layer_keys) == 2 * golden["config"]["text"]["num_hidden_layers"]
    for key in layer_keys:
        close(stage2_run[key.removeprefix("stage2.")], y[key], HIDDEN_ATOL)


def test_stage2_final_states_features_and_logits(golden, stage2_run):
    y = golden["outputs"]
    for i in range(NUM_QUERIES):
        for name in ("branch0_last_hidden_state", "branch1_last_hidden_state"):
            close(stage2_run[f"{name}.q{i}"], y[f"stage2.{name}.q{i}"], HIDDEN_ATOL)
        close(stage2_run[f"pair_features.q{i}"], y[f"stage2.pair_features.q{i}"], HIDDEN_ATOL)
        close(stage2_run[f"head_logits.q{i}"], y[f"stage2.head_logits.q{i}"], EMBED_ATOL)
    close(stage2_run["head_logits"], y["stage2.head_logits"], EMBED_ATOL)


def test_stage2_scores_and_ranking(golden, stage2_run):
    y = golden["outputs"]
    close(stage2_run["scores"], y["stage2.scores"], EMBED_ATOL)
    ranking = torch.argsort(stage2_run["scores"], dim=1, descending=True, stable=True)
    assert torch.equal(ranking, y["stage2.ranking"])


def test_stage2_scores_from_padded_batch(golden, stage2_run):
    """Stage-one batch style (captions padded together) gives the same scores: padding is masked in both stages."""
    model, y = golden["model"], golden["outputs"]
    ids, mask = model.tokenizer(golden["config"]["fixture"]["captions"])
    ref, cand = stage2_run["ref_vit_tokens"], stage2_run["cand_vit_tokens"]
    with torch.no_grad():
        z_t = model.stage1.fuse(ref, ids, mask)
        scores = torch.stack([model.stage2.score(z_t[i : i + 1], ids[i : i + 1], mask[i : i + 1], cand) for i in range(NUM_QUERIES)])
    close(scores, y["stage2.scores"], EMBED_ATOL)


def test_stage2_aligned_rows_equal_broadcast(golden, stage2_run):
    """K aligned copies of one query score exactly like the single query broadcast over K candidates."""
    model = golden["model"]
    ids, mask = stage2_run["input_ids.q0"], stage2_run["attention_mask.q0"]
    z_t, cand = stage2_run["z_t.q0"], stage2_run["cand_vit_tokens"]
    k = len(cand)
    with torch.no_grad():
        aligned = model.stage2.score(z_t.expand(k, -1, -1), ids.expand(k, -1), mask.expand(k, -1), cand)
    close(aligned, stage2_run["scores.q0"], 1e-6)
