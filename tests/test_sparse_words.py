"""Word terms of the sparse heads (cir.stages.sparse_words): how a vector is composed, the heads file round trip,
the error for heads given no tokens, and a short `cir train sparse-words` on the tiny synthetic benchmark whose
heads then search and explain in words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cir
from cir.cli import main as cli_main
from cir.data import load_benchmark
from cir.errors import CirError
from cir.stages.sparse_head import NUM_TERMS, SparseEncoder
from cir.stages.sparse_words import WordHeads

REPO = Path(__file__).resolve().parents[1]
SHIPPED = Path(cir.__file__).parent / "checkpoints" / "blip-tiny-synth-sparse.safetensors"


def test_a_vector_holds_its_words_then_the_heaviest_free_terms_scaled_within_its_cap() -> None:
    heads = WordHeads(["red", "cyan"], [[10], [20, 21]], image_dim=4, query_dim=4, free_scale=0.5)
    free = torch.zeros(2, 40)
    free[:, 10] = 9.0  # a word's term in the free head: dropped, the word part alone sets it
    free[:, 30:36] = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    word_weights = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # row 0: red and cyan (two pieces), row 1: no word
    out = heads.compose(free, word_weights, cap=5)
    assert out[0, 10] == 1.0 and out[0, 20] == out[0, 21] == 2.0
    assert torch.equal(out[0, 30:36], torch.tensor([3.0, 2.5, 0.0, 0.0, 0.0, 0.0]))  # 5 - 3 word terms = 2 free
    assert out[1, 10] == 0.0 and torch.equal(out[1, 30:36], torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0, 0.0]))
    assert ((out > 0).sum(1) <= 5).all()


def test_a_query_carries_its_references_words_and_weighs_the_edits_words_more() -> None:
    torch.manual_seed(0)
    heads = WordHeads(["red", "large"], [[10], [11]], image_dim=3, query_dim=3, carry=[True, False],
                      reference_weight=1.0, edit_weight=2.0)
    heads.image.forward = lambda tokens, mask=None: torch.tensor([[1.0, 1.0]]).expand(len(tokens), 2)
    heads.edit.forward = lambda tokens, mask=None: torch.tensor([[-1.0, 1.0], [-1.0, -1.0]])
    weights = heads.query_words(torch.zeros(2, 4, 3), torch.ones(2, 4), torch.zeros(2, 5, 3))
    # "large" is in most images (not carried) but the first edit asks for it; "red" comes from the reference
    assert torch.equal(weights, torch.tensor([[1.0, 2.0], [1.0, 0.0]]))
    assert torch.equal(heads.image_words(torch.zeros(1, 5, 3)), torch.tensor([[1.0, 1.0]]))


@pytest.fixture(scope="module")
def model():
    from cir.models import create_model

    return create_model("blip-tiny", pretrained="synth", stages=("stage1",))


def test_heads_with_word_terms_survive_the_file_and_refuse_to_encode_without_tokens(model, tmp_path: Path) -> None:
    encoder = SparseEncoder.for_model(model, max_query_terms=12, max_image_terms=10)
    words = WordHeads(["blue", "cyan"], [[2630], [22330, 2319]], model.config.encoder_width,
                      model.config.text.hidden_size, hidden=16, carry=[True, False], free_scale=0.25)
    encoder.words = words
    path = encoder.save(tmp_path / "heads.safetensors")
    loaded = SparseEncoder.load(path, model)
    assert loaded.words.settings() == words.settings()
    embeddings, tokens = torch.randn(3, model.config.embed_dim), torch.randn(3, 10, model.config.encoder_width)
    first = encoder.eval().encode_images(embeddings, tokens)
    again = loaded.encode_images(embeddings, tokens)
    assert first.shape == (3, NUM_TERMS) and (first.getnnz(1) <= 10).all()
    assert np.allclose(first.toarray(), again.toarray(), atol=2e-2)  # the file holds fp16
    with pytest.raises(CirError, match="have word terms, which are read from the image tokens"):
        loaded.encode_images(embeddings)
    with pytest.raises(CirError, match="fused query tokens and reference tokens"):
        loaded.encode_queries(embeddings)
    from safetensors.torch import save_file

    from cir.errors import FormatError

    tensors = {k: v.detach().half().contiguous() for k, v in encoder.state_dict().items()}
    save_file(tensors, str(tmp_path / "broken.safetensors"), metadata={"word_heads": "{\"words\": ["})
    with pytest.raises(FormatError, match=r"broken.safetensors: metadata word_heads is not what WordHeads saves"):
        SparseEncoder.load(tmp_path / "broken.safetensors", model)


def test_a_short_word_training_writes_heads_that_search_and_explain_in_words(synth_tiny: Path, tmp_path: Path,
                                                                              capsys) -> None:
    """`cir train sparse-words` on the tiny benchmark: the word losses fall, validation reports the term metrics, and
    the heads file it writes serves `cir eval` and `cir explain` (the synthetic words lead the explanations)."""
    config = tmp_path / "words.yaml"
    config.write_text(
        "benchmark: {name: cirr, release: synth, root: " + str(synth_tiny) + ", split: val, train_split: train}\n"
        "model: {name: blip-tiny, pretrained: synth}\n"
        "stage_one: {kind: sparse, index: csr, k: 50, sparse_head: " + str(tmp_path / "run" / "sparse.safetensors") + "}\n"
        "cache_dir: " + str(tmp_path / "cache") + "\n"
        "train_sparse_words:\n"
        "  out: " + str(tmp_path / "run") + "\n"
        "  epochs: 3\n  batch_size: 32\n  lr: 3.0e-3\n  warmup_steps: 5\n  threads: 1\n"
        "  options: {stage1: " + str(Path(cir.__file__).parent / "checkpoints" / "blip-tiny-synth-stage1.safetensors")
        + ", sparse_head: " + str(SHIPPED) + ", word_supervision: scene, hidden: 64, max_image_terms: 24}\n"
    )
    assert cli_main(["train", "sparse-words", "--config", str(config)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["image_bce"] < lines[0]["image_bce"]
    for name in ("term_precision_image", "term_recall_image", "term_precision_query", "explanation@3"):
        assert 0.0 <= lines[-1][name] <= 1.0, name
    assert lines[-1]["image_terms"] <= 24
    heads = SparseEncoder.load(tmp_path / "run" / "sparse.safetensors", cir.models.create_model("blip-tiny", pretrained="synth", stages=("stage1",)))
    assert heads.words is not None and {"red", "circle", "large"} <= set(heads.words.words)
    assert not heads.words.carry[heads.words.words.index("large")]  # in most images: not carried from the reference
    capsys.readouterr()
    val = load_benchmark("cirr", synth_tiny, "val")
    ids = ",".join(q.id for q in val.queries[:5])
    assert cli_main(["explain", "--config", str(config), "--queries", ids]) == 0
    assert capsys.readouterr().out.count("query ") == 5
    with pytest.raises(SystemExit):
        cli_main(["train", "sparse-wordz", "--config", str(config)])


def test_word_training_refuses_unknown_options_and_needs_the_distilled_heads(synth_tiny: Path, tmp_path: Path) -> None:
    from cir.config import Config
    from cir.train.runner import train_stage

    def config(**options) -> Config:
        stage1 = str(Path(cir.__file__).parent / "checkpoints" / "blip-tiny-synth-stage1.safetensors")
        return Config.from_dict(
            {"benchmark": {"name": "cirr", "release": "synth", "root": str(synth_tiny)},
             "train_sparse_words": {"options": {"stage1": stage1, "word_supervision": "scene", **options}}},
            source="my.yaml",
        )

    with pytest.raises(CirError, match=r"^my.yaml: unknown key train_sparse_words.options.hiden"):
        train_stage(config(hiden=3), "sparse-words", tmp_path / "run")
    with pytest.raises(CirError, match=r"options.sparse_head must name the distilled heads"):
        train_stage(config(), "sparse-words", tmp_path / "run")
    no_stage1 = Config.from_dict({"benchmark": {"name": "cirr", "release": "synth", "root": str(synth_tiny)}},
                                 source="my.yaml")
    with pytest.raises(CirError, match=r"^my.yaml: train_sparse_words.options.stage1 must name the stage-one checkpoint"):
        train_stage(no_stage1, "sparse-words", tmp_path / "run")

