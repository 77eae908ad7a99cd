"""Sparse terms that mean their words: the words of synthetic scenes and edits, the four term metrics on vectors
made by hand, WordPieces joined into words, the explanation of a wrong top hit, the word losses of sparse training,
and `cir eval` / `cir explain` / `cir search --target` with the shipped heads on the tiny synthetic benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cir
from cir.cli import main as cli_main
from cir.data import load_benchmark
from cir.data.synth import split_metadata
from cir.data.synth.words import edit_words, scene_words, term_truth
from cir.eval.term_metrics import content_words, term_metrics
from cir.models.tokenizer import BlipTokenizer
from cir.stages.sparse_head import NUM_TERMS
from cir.types import Query, Ranking, Run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer() -> BlipTokenizer:
    return BlipTokenizer()


def test_scene_and_edit_words_come_from_the_metadata(synth_tiny: Path) -> None:
    meta = split_metadata(synth_tiny, "val")
    words, colours_shapes, edits = scene_words(synth_tiny, "val"), scene_words(synth_tiny, "val", ("shape", "colour")), edit_words(synth_tiny, "val")
    assert set(words) == set(meta["scenes"]) and set(edits) == set(meta["queries"])
    for image_id, objects in meta["scenes"].items():
        assert set(words[image_id]) == {w for obj in objects for w in obj[2:]}
        assert set(colours_shapes[image_id]) == {w for obj in objects for w in obj[2:4]}
    kinds = set()
    for query_id, entry in meta["queries"].items():
        parts = entry["edit"]["parts"] if entry["edit"]["type"] == "compound" else [entry["edit"]]
        expected = []
        for part in parts:
            kinds.add(part["type"])
            if part["type"] in ("recolour", "reshape", "resize"):
                expected.append(part["to"])
            elif part["type"] == "add":
                expected.append(part["object"]["shape"])
        assert edits[query_id] == list(dict.fromkeys(expected)), entry
        target_words = set(words[entry["target"]])
        assert set(edits[query_id]) <= target_words  # what the edit brings is in the target
    assert {"remove", "move", "recolour", "add"} <= kinds
    assert term_truth(synth_tiny, "val") == {"words_of_image": words, "recall_words": colours_shapes, "edit_words": edits}


def test_wordpieces_join_back_into_the_words_they_spell(tokenizer) -> None:
    assert tokenizer.pieces("cyan") == ["cy", "##an"]
    joined = tokenizer.join_pieces([("blue", 1.0), ("cy", 0.6), ("##an", 0.5), ("##s", 0.1)], ["cyan", "circle"])
    assert joined == [("cyan", pytest.approx(1.1)), ("blue", 1.0), ("##s", 0.1)]
    assert tokenizer.join_pieces([("cy", 0.6)], ["cyan"]) == [("cy", 0.6)]  # a half word stays a piece
    assert content_words(tokenizer, "Make the cyan circle, in the top left, blue.") == ["make", "cyan", "circle", "top", "left", "blue"]


def _rows(tokenizer, rows: list[dict[str, float]]) -> sp.csr_matrix:
    out = sp.lil_matrix((len(rows), NUM_TERMS), dtype=np.float32)
    for i, row in enumerate(rows):
        for piece, weight in row.items():
            out[i, tokenizer.token_to_id(piece)] = weight
    return out.tocsr()


def test_the_four_term_metrics_on_vectors_made_by_hand(tokenizer) -> None:
    images = ["a", "b"]
    words = {"a": ["circle", "cyan", "small"], "b": ["star", "red", "large"]}
    recall = {"a": ["circle", "cyan"], "b": ["star", "red"]}
    image_vectors = _rows(tokenizer, [
        {"circle": 2.0, "cy": 1.0, "##an": 1.0, "then": 1.0},  # 4 of 5 on its words; every shape and colour there
        {"star": 3.0, "blue": 1.0},                             # 3 of 4; "red" missing
    ])
    queries = [Query("q1", "b", "make the star a cyan circle"), Query("q2", "a", "make it red")]
    query_vectors = _rows(tokenizer, [
        {"cy": 2.0, "##an": 1.0, "circle": 1.0, "the": 1.0},   # "the" is not a content word: 4 of 5
        {"red": 1.0, "star": 1.0, "large": 1.0, "blue": 1.0},  # target b: 3 of 4
    ])
    targets = {"q1": ["a"], "q2": ["b"]}
    run = Run([Ranking("q1", ["a", "b"], [2.0, 1.0]), Ranking("q2", ["b", "a"], [2.0, 1.0])])
    edits = {"q1": ["cyan", "circle"], "q2": ["red"]}
    got = term_metrics(tokenizer, images, image_vectors, queries, query_vectors, targets, run, words, recall, edits)
    assert got["term_precision_image"] == pytest.approx((4 / 5 + 3 / 4) / 2)
    assert got["term_recall_image"] == 0.5
    assert got["term_precision_query"] == pytest.approx((4 / 5 + 3 / 4) / 2)
    # q1: cyan (2 + 1 = 3) and circle (2) lead its target's explanation; q2: its target lacks "red"
    assert got["explanation@3 queries"] == 2 and got["explanation@3"] == 0.5
    # a target stage one does not rank in its top `top` is not tested; nor is a query whose edit brings no word
    far = Run([Ranking("q1", ["b"] + [f"x{i}" for i in range(10)] + ["a"], list(range(12, 0, -1))), run["q2"]])
    got = term_metrics(tokenizer, images, image_vectors, queries, query_vectors, targets, far, words, recall,
                       {"q1": ["cyan"], "q2": []})
    assert got["explanation@3 queries"] == 0 and got["explanation@3"] == 0.0


def test_the_word_losses_measure_what_they_say() -> None:
    from cir.train.sparse import keep_top
    from cir.train.term_words import TermSets, free_below_words, off_word_share, word_margin

    sets = TermSets([[1, 3], [], [0]])
    mask = sets.mask(np.array([2, 0]))
    assert mask.shape == (2, NUM_TERMS) and mask[0, 0] and mask[1, 1] and mask[1, 3] and int(mask.sum()) == 3
    weights = torch.zeros(2, NUM_TERMS)
    weights[0, :3] = torch.tensor([1.0, 2.0, 1.0])  # word 0: 1 of 4 on its words
    weights[1, [1, 3, 5]] = torch.tensor([1.0, 1.0, 2.0])  # words 1, 3: 2 of 4
    assert float(off_word_share(keep_top(weights, 10), mask)) == pytest.approx((3 / 4 + 2 / 4) / 2, abs=1e-5)
    assert float(word_margin(weights, mask, margin=1.5)) == pytest.approx((0.5 + 0.5) / 2)
    assert float(word_margin(weights, torch.zeros_like(mask), margin=1.5)) == 0.0
    # row 0: lightest word 1.0, free 2.0 and 1.0 above 1.0 - 0.5 by 1.5 and 0.5; row 1: lightest 1.0, free 2.0 by 1.5
    assert float(free_below_words(weights, mask, gap=0.5)) == pytest.approx((2.0 + 1.5) / 2)
    assert float(free_below_words(weights, torch.zeros_like(mask), gap=0.5)) == 0.0
    missing = mask.clone()
    missing[0, 7] = True  # a word of row 0 at weight 0 is word_margin's to raise: the threshold ignores it
    assert float(free_below_words(weights, missing, gap=0.5)) == pytest.approx((2.0 + 1.5) / 2)
    missing[1, [1, 3]] = False
    missing[1, 9] = True  # row 1 with none of its words present costs nothing
    assert float(free_below_words(weights, missing, gap=0.5)) == pytest.approx(2.0 / 2)


@pytest.fixture(scope="module")
def sparse_setup(synth_tiny: Path, tmp_path_factory):
    from cir.cache import FeatureCache
    from cir.models import create_model
    from cir.stages.sparse import SparseRetriever

    model = create_model("blip-tiny", pretrained="synth")
    val = load_benchmark("cirr", synth_tiny, "val")
    retriever = SparseRetriever(model, FeatureCache(tmp_path_factory.mktemp("cache")))
    retriever.index(val.gallery)
    return retriever, val


def test_a_wrong_top_hit_is_explained_by_the_terms_that_outscored_the_target(sparse_setup) -> None:
    retriever, val = sparse_setup
    run = retriever.search(val.queries, 5)
    misses = [q for q in val.queries if run[q.id].ids[0] not in (val.targets[q.id][0], q.reference)]
    assert misses, "the shipped heads rank every target of the tiny split first"
    for query in misses[:5]:
        top, target = run[query.id].ids[0], val.targets[query.id][0]
        mismatch = retriever.explain_mismatch(query, top, target, top=None)
        assert mismatch and all(excess > 0 for _, excess in mismatch)
        assert [e for _, e in mismatch] == sorted((e for _, e in mismatch), reverse=True)
        wrong, right = (dict(retriever.explain(query, i, top=None)) for i in (top, target))
        for term, excess in mismatch:
            assert excess == pytest.approx(wrong[term] - right.get(term, 0.0))
        assert sum(wrong.values()) >= sum(right.values()) - 1e-2  # the top hit did score higher (index weights are fp16)


def test_explanations_join_wordpieces_into_the_words_of_the_text(sparse_setup) -> None:
    retriever, val = sparse_setup
    cyan = next(q for q in val.queries if "cyan" in q.text.lower())
    terms = retriever.explain(cyan, val.targets[cyan.id][0], top=None)
    names = [t for t, _ in terms]
    assert not ({"cy", "##an"} <= set(names))  # both halves present would have been joined
    vector = retriever.encode_queries([cyan])
    row = retriever.image_vectors[retriever.encoder.features.rows([val.targets[cyan.id][0]])[0]]
    assert sum(w for _, w in terms) == pytest.approx(float(vector.multiply(row).sum()), rel=1e-4)


def test_the_shipped_heads_explain_a_target_by_the_words_its_edit_asks_for(sparse_setup, synth_tiny: Path) -> None:
    """The shipped heads' word terms: the explanation of a target leads with the edit's word on the tiny val split
    (a regression check; the whole-split figures are in docs/sparse-terms.md)."""
    retriever, val = sparse_setup
    assert retriever.sparse.words is not None, "the shipped heads have word terms"
    brought = term_truth(synth_tiny, "val")["edit_words"]
    asked = [q for q in val.queries if brought[q.id]][:40]
    led = sum(set(brought[q.id]) <= {w for w, _ in retriever.explain(q, val.targets[q.id][0], top=3)} for q in asked)
    assert len(asked) >= 20 and led >= 0.7 * len(asked), (led, len(asked))


def test_word_terms_off_searches_the_distilled_terms_alone_at_their_own_caps(sparse_setup) -> None:
    """`word_terms: false` (configs/synth-tiny-sparse-distilled.yaml): the same heads' distilled terms, nothing else."""
    from cir.stages.sparse import SparseRetriever
    from cir.stages.sparse_head import top_terms

    retriever, val = sparse_setup
    distilled = SparseRetriever(retriever.model, retriever.encoder.cache, word_terms=False)
    assert distilled.sparse.words is None and retriever.sparse.words is not None  # the shipped heads keep theirs
    distilled.index(val.gallery)
    embeddings = torch.as_tensor(np.asarray(distilled.encoder.features["embeddings"], dtype=np.float32))
    with torch.no_grad():
        expected = top_terms(retriever.sparse.image(embeddings), 30)
    assert (distilled.image_vectors != expected).nnz == 0
    run = distilled.search(val.queries[:5], 3)
    assert all(len(run[q.id].ids) == 3 for q in val.queries[:5])


def test_cir_eval_of_a_sparse_stage_one_reports_the_term_metrics(synth_tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["eval", "--config", str(REPO / "configs" / "synth-tiny-sparse.yaml"), "--root", str(synth_tiny),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert cli_main(args) == 0
    assert "sparse terms" in capsys.readouterr().out
    stage1 = json.loads((out / "metrics.json").read_text())["stage1"]
    for name in ("term_precision_image", "term_recall_image", "term_precision_query", "explanation@3"):
        assert 0.0 <= stage1[name] <= 1.0, (name, stage1)
    assert stage1["explanation@3 queries"] > 0
    assert "term_precision_image" not in json.loads((out / "metrics.json").read_text())["stage2"]


def test_cir_explain_and_cir_search_say_what_misled_a_wrong_top_hit(synth_tiny: Path, tmp_path: Path, capsys) -> None:
    val = load_benchmark("cirr", synth_tiny, "val")
    config = ["--config", str(REPO / "configs" / "synth-tiny-sparse.yaml"), "--root", str(synth_tiny),
              "--cache-dir", str(tmp_path / "cache")]
    ids = ",".join(q.id for q in val.queries[:10])
    assert cli_main(["explain", *config, "--queries", ids, "--markdown", str(tmp_path / "ex.md")]) == 0
    text = capsys.readouterr().out
    assert text.count("query ") == 10 and "(target)" in text
    table = (tmp_path / "ex.md").read_text()
    assert table.count("\n| **") == 10
    assert cli_main(["explain", *config, "--queries", "nope"]) == 2
    assert "'nope' is not a query" in capsys.readouterr().err
    query = val.queries[0]
    wrong = next(i for i in val.subsets[query.id] if i not in (query.reference, val.targets[query.id][0]))
    args = ["search", *config, "--reference", query.reference, "--text", query.text, "--target", wrong,
            "--sheet", str(tmp_path / "s.png"), "-k", "3"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert f"outscored the target {wrong}" in out or f"the top hit is the target {wrong}" in out


def test_scene_word_supervision_is_refused_outside_the_synthetic_benchmark(tmp_path: Path) -> None:
    from cir.config import Config
    from cir.errors import CirError
    from cir.train.runner import train_stage

    cfg = Config.from_dict(
        {"benchmark": {"name": "cirr", "root": str(tmp_path)},
         "train_sparse": {"options": {"stage1": "x.safetensors", "word_supervision": "scene"}}},
        source="my.yaml",
    )
    with pytest.raises(CirError, match=r"^my.yaml: train_sparse.options.word_supervision: scene needs cir's synthetic"):
        train_stage(cfg, "sparse", tmp_path / "run")


def test_a_short_sparse_run_with_word_losses_logs_and_validates_them(synth_tiny: Path, tmp_path: Path) -> None:
    """The word losses train beside the distillation, and the validation reports the four term metrics."""
    from cir.config import TrainConfig
    from cir.models import create_model
    from cir.train.data import load_triplets
    from cir.errors import CirError
    from cir.stages.sparse_head import SparseEncoder
    from cir.train.loop import fit
    from cir.train.sparse import SparseTask

    model = create_model("blip-tiny", pretrained="synth", stages=("stage1",))
    train, val = (load_benchmark("cirr", synth_tiny, split) for split in ("train", "val"))
    data = load_triplets(train, model.preprocess)
    words = scene_words(synth_tiny, "train")
    val_words = term_truth(synth_tiny, "val")
    shipped_head = Path(cir.__file__).parent / "checkpoints" / "blip-tiny-synth-sparse.safetensors"
    with pytest.raises(CirError, match="init_head .*blip-tiny-synth-sparse.safetensors does not fit"):
        SparseTask(model, data, val, trainable_vocab=False, init_head=shipped_head)
    task = SparseTask(model, data, val, val_queries=None, trainable_vocab=True, word_supervision="scene",
                      image_word_weight=2.0, query_word_weight=1.0, new_word_weight=1.0, min_restrict=0.25,
                      free_below_weight=1.0, init_head=shipped_head,
                      image_words=[words[i] for i in data.image_ids], val_words=val_words)
    assert task.words.images.mask(np.arange(len(data.image_ids))).sum(1).min() >= 3  # a shape, a colour, a size
    shipped = SparseEncoder.load(shipped_head, model)
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in task.module.state_dict().items())  # init_head
    metrics = fit(task, TrainConfig(epochs=2, batch_size=64, lr=1e-3, warmup_steps=2, threads=1), tmp_path / "run",
                  weights_name="sparse")
    for name in ("image_off", "image_gap", "query_off", "new_gap", "image_free", "query_free"):
        assert np.isfinite(metrics[name]), name
    for name in ("term_precision_image", "term_recall_image", "term_precision_query", "explanation@3"):
        assert 0.0 <= metrics[name] <= 1.0, name
