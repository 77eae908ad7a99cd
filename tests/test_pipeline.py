"""The Pipeline API, stage composition, the feature cache and `cir eval` on a tiny synthetic benchmark.

The model has random weights here: these tests check plumbing and protocol (what is ranked, cached, excluded,
written), not retrieval quality, which the training tests and `cir demo` measure.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cir import Ranking, Run
from cir.cache import FeatureCache
from cir.cli import main as cli_main
from cir.config import Config
from cir.data import load_benchmark
from cir.errors import CirError, UnknownIdError
from cir.eval import evaluate
from cir.experiment import run_for_file
from cir.pipeline import Pipeline
from cir.stages.dense import DenseRetriever
from cir.stages.rerank import DualEncoderReranker


@pytest.fixture(scope="module")
def val(synth_tiny: Path):
    return load_benchmark("cirr", synth_tiny, "val")


@pytest.fixture(scope="module")
def pipeline(tiny_model, val, tmp_path_factory) -> Pipeline:
    cache = FeatureCache(tmp_path_factory.mktemp("cache"))
    pipe = DenseRetriever(tiny_model, cache) % 20 >> DualEncoderReranker(tiny_model, cache)
    return pipe.index(val.gallery)


def test_operators_compose_a_pipeline(tiny_model) -> None:
    retriever, reranker = DenseRetriever(tiny_model), DualEncoderReranker(tiny_model)
    pipe = retriever % 20 >> reranker
    assert isinstance(pipe, Pipeline) and pipe.k == 20 and pipe.retriever is retriever and pipe.reranker is reranker
    assert (retriever >> reranker).k == 50 and (retriever % 7).reranker is None
    assert repr(pipe) == "Pipeline(dense % 20 >> dual-encoder)"


def test_stage_two_reorders_only_the_top_k_and_keeps_the_tail(pipeline, val) -> None:
    queries = val.queries[:5]
    runs = pipeline.run(queries, depth=len(val.gallery))
    for q in queries:
        first, second = runs["stage1"][q.id], runs["stage2"][q.id]
        assert q.reference not in first.ids  # CIRR-style exclusion is the pipeline default
        assert len(first) == len(val.gallery) - 1
        assert set(second.ids[:20]) == set(first.ids[:20])
        assert second.ids[20:] == first.ids[20:]
        assert second.scores == sorted(second.scores, reverse=True)


def test_fashioniq_protocol_keeps_the_reference(tiny_model, val) -> None:
    pipe = DenseRetriever(tiny_model) % 10
    pipe.exclude_reference = False
    pipe.index(val.gallery)
    query = val.queries[0]
    ranking = pipe.run([query], depth=len(val.gallery))["stage1"][query.id]
    assert query.reference in ranking.ids and len(ranking) == len(val.gallery)


def test_single_query_search_and_rerank_from_anywhere(pipeline, val) -> None:
    query = val.queries[0]
    results = pipeline.search(query.reference, query.text, k=5)
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert all(r.stage1_rank is not None and r.stage1_rank <= 20 for r in results)
    path_results = pipeline.search(str(val.gallery.path(query.reference)), query.text, k=5)
    assert [r.image_id for r in path_results][:3] != [] and path_results[0].score == pytest.approx(results[0].score, abs=1e-2)
    candidates = val.subsets[query.id]
    reranked = pipeline.rerank(query.reference, query.text, candidates)
    assert sorted(r.image_id for r in reranked) == sorted(candidates)
    assert [r.stage1_rank for r in reranked] != [None] * len(candidates)


def test_stage_two_starts_from_stage_one_encodings_of_the_same_weights(pipeline, val, monkeypatch) -> None:
    import cir.stages.rerank as rerank_module

    queries = val.queries[:4]
    first = pipeline.run(queries, rerank=False)["stage1"]
    assert first.query_states is not None and first.top(3).query_states is first.query_states
    encoded_again = []
    real_encode = rerank_module.encode_queries
    monkeypatch.setattr(rerank_module, "encode_queries", lambda *a: encoded_again.append(a[2]) or real_encode(*a))
    reused = pipeline.reranker.rerank(queries, first, 20)
    assert encoded_again == []  # every query's z_t came from stage one
    fresh = pipeline.reranker.rerank(queries, Run(first.values()), 20)  # a run from a file: nothing to start from
    assert len(encoded_again) == len(queries)
    for q in queries:
        assert reused[q.id].ids[:3] == fresh[q.id].ids[:3]
        assert reused[q.id].scores[:20] == pytest.approx(fresh[q.id].scores[:20], abs=1e-4)
    other_text = [dataclasses.replace(q, text=q.text + " and a red star") for q in queries]
    pipeline.reranker.rerank(other_text, first, 20)  # same ids, other texts: the states do not apply
    assert len(encoded_again) == 2 * len(queries)


def test_the_reranker_adds_the_dense_similarity_whatever_scores_stage_one_gave(tiny_model, val) -> None:
    """A sparse stage one's dot products have another scale: the reranker recomputes the dense similarity itself."""
    query = val.queries[0]
    candidates = list(val.subsets[query.id])
    retriever, plain, weighted = DenseRetriever(tiny_model), DualEncoderReranker(tiny_model, stage1_weight=0.0), DualEncoderReranker(tiny_model, stage1_weight=10.0)
    for stage in (retriever, plain, weighted):
        stage.index(val.gallery)
    features = retriever.encoder.features
    dense = features["embeddings"][features.rows(candidates)].astype("float32") @ retriever.embed([query])[0]
    for scale in (1.0, 1000.0):  # the proposer's scores must not matter
        first = Run([Ranking(query.id, candidates, [scale * (len(candidates) - i) for i in range(len(candidates))])])
        without, with_dense = (r.rerank([query], first)[query.id] for r in (plain, weighted))
        without, with_dense = dict(zip(without.ids, without.scores)), dict(zip(with_dense.ids, with_dense.scores))
        for candidate, similarity in zip(candidates, dense):
            assert with_dense[candidate] == pytest.approx(without[candidate] + 10.0 * similarity, abs=2e-2)


def test_a_stage_one_weight_needs_stage_two_to_read_stage_one_tokens(tiny_model) -> None:
    separate = dataclasses.replace(tiny_model, config=dataclasses.replace(tiny_model.config, share_stage2_vision=False))
    with pytest.raises(CirError, match="stage_two.stage1_weight to 0"):
        DualEncoderReranker(separate, stage1_weight=5.0)


def test_unknown_reference_is_a_clear_error(pipeline) -> None:
    with pytest.raises(UnknownIdError, match="no-such-image"):
        pipeline.search("no-such-image", "make it blue")


def test_feature_cache_hits_and_rebuilds(tiny_model, val, tmp_path) -> None:
    cache = FeatureCache(tmp_path)
    first = DenseRetriever(tiny_model, cache)
    first.index(val.gallery)
    assert first.encoder.features.encoded == len(val.gallery)
    again = DenseRetriever(tiny_model, cache)
    again.index(val.gallery)
    assert again.encoder.features.encoded == 0  # a second index encodes no image
    smaller = type(val.gallery)(val.gallery.ids[:-1], val.gallery.paths, "smaller")
    third = DenseRetriever(tiny_model, cache)
    third.index(smaller)
    assert third.encoder.features.encoded == len(smaller)  # another gallery is another entry


def test_run_for_file_rescores_identically(pipeline, val) -> None:
    runs = pipeline.run(val.queries, depth=len(val.gallery))
    full = evaluate(val, runs["stage2"])
    cut = run_for_file(runs["stage2"], val, depth=60)
    assert max(len(r) for r in cut.values()) <= 60 + 5
    assert evaluate(val, cut) == full


def test_config_errors_name_the_key_and_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage_one:\n  kind: dense\n  indx: flat\n")
    with pytest.raises(CirError, match=r"bad.yaml: stage_one: dense: unknown setting 'indx' \(known: index, "):
        Pipeline.from_config(Config.load(bad), model=object())
    with pytest.raises(CirError, match="config file not found"):
        Config.load(tmp_path / "missing.yaml")


def test_cir_eval_writes_runs_and_metrics_then_hits_the_cache(synth_tiny, tiny_model, tmp_path, monkeypatch, capsys) -> None:
    import cir.models

    monkeypatch.setattr(cir.models, "model_from_settings", lambda settings: tiny_model)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"benchmark: {{name: cirr, root: {synth_tiny}, split: val}}\n"
        f"stage_one: {{k: 20}}\ncache_dir: {tmp_path / 'cache'}\n"
    )
    assert cli_main(["eval", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"stage1", "stage2"}
    assert {"recall@1", "recall@50", "recall_subset@1", "avg", "ms/query"} <= set(metrics["stage1"])
    rescored = evaluate(load_benchmark("cirr", synth_tiny, "val"), Run.load(tmp_path / "out" / "run.stage2.json"))
    assert rescored == {k: v for k, v in metrics["stage2"].items() if k != "ms/query"}
    assert "gallery images encoded" in capsys.readouterr().out
    assert cli_main(["eval", "--config", str(config)]) == 0
    assert "cache hit: no gallery image encoded" in capsys.readouterr().out
