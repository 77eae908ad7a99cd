"""The Milvus stage-one backend against the real engine (milvus-lite, started from a tmp path by each test)."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from cir.errors import CirError
from cir.index import milvus
from cir.index.dense_faiss import DenseIndex
from cir.index.milvus import GalleryVectors, MilvusIndex, MilvusSettings
from cir.index.sparse import SparseIndex

META = {"encoder": "blip-tiny-stage1-fp32-abc", "precision": "fp32"}


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    milvus.close_clients()


@pytest.fixture(scope="module")
def model():
    from cir.models import create_model

    return create_model("blip-tiny", pretrained="synth")


@pytest.fixture(scope="module")
def vectors(synth_tiny, model, tmp_path_factory):
    """The tiny val gallery's real vectors (dense embeddings, sparse image vectors) and 40 queries of each."""
    from cir.cache import FeatureCache
    from cir.data import load_benchmark
    from cir.stages.sparse import SparseRetriever

    benchmark = load_benchmark("cirr", synth_tiny, "val")
    retriever = SparseRetriever(model, FeatureCache(tmp_path_factory.mktemp("cache")))
    features = retriever.encoder.index(benchmark.gallery)
    dense = retriever.dense_vectors(features)
    sparse_queries, queries, _ = retriever.query_vectors(benchmark.queries[:40])
    return {"benchmark": benchmark, "ids": list(features.ids), "dense": dense, "queries": queries,
            "sparse": retriever.gallery_vectors(features), "sparse_queries": sparse_queries}


def settings(tmp_path: Path, **params) -> MilvusSettings:
    return MilvusSettings.parse({"uri": str(tmp_path / "milvus.db"), "collection": "gallery", **params})


def sync(tmp_path, gallery: GalleryVectors, fingerprint="fp", progress=None, meta=META, **params) -> MilvusIndex:
    return MilvusIndex.sync(gallery, settings(tmp_path, **params), meta, fingerprint, progress)


def test_dense_flat_collection_matches_faiss_flat(vectors, tmp_path):
    index = sync(tmp_path, GalleryVectors(vectors["ids"], dense=vectors["dense"]), batch_size=100)
    assert index.ntotal == len(vectors["ids"]) and index.layout == "dense:128"
    assert index.params == {"index_type": "FLAT"}  # what it reports is what it built
    scores, ids = index.search(vectors["queries"], 10)
    want_scores, want_ids = DenseIndex.build(vectors["dense"], vectors["ids"], kind="flat").search(vectors["queries"], 10)
    assert ids == want_ids
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_sparse_collection_matches_exact_csr(vectors, tmp_path):
    index = sync(tmp_path, GalleryVectors(vectors["ids"], sparse=vectors["sparse"]))
    assert index.params == {"sparse_index_type": "SPARSE_INVERTED_INDEX"}
    scores, ids = index.search(vectors["sparse_queries"], 10)
    want_scores, want_ids = SparseIndex.build(vectors["sparse"], vectors["ids"]).search(vectors["sparse_queries"], 10)
    # Milvus holds the float16-rounded weights csr stores, in float32: the same top 10, scores to summation order.
    assert ids == want_ids
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def _digest_of_folder(folder: Path) -> str:
    """Names, bytes and modification times of the feature cache's files (the Milvus database beside them excluded)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.relative_to(folder).parts[0] != "milvus":
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def test_interrupted_ingestion_resumes_with_exactly_the_gallery(vectors, tmp_path):
    gallery = GalleryVectors(vectors["ids"], dense=vectors["dense"], sparse=vectors["sparse"])
    n = len(gallery.ids)

    class Interrupted(Exception):
        pass

    def interrupt(done, total):
        if done >= 200:
            raise Interrupted

    with pytest.raises(Interrupted):
        sync(tmp_path, gallery, progress=interrupt, batch_size=100)
    milvus.close_clients()  # as if the process had died: a fresh client reopens the database

    s = settings(tmp_path)
    with pytest.raises(CirError, match="unfinished ingestion"):
        MilvusIndex.open(s)  # not searchable as if complete
    seen = []
    index = sync(tmp_path, gallery, progress=lambda done, total: seen.append((done, total)), batch_size=100)
    assert seen[-1] == (n - 200, n - 200)  # only the absent rows were inserted
    stored = index.stored_digests()
    assert len(stored) == n and sorted(i for i, _ in stored) == sorted(gallery.ids)
    assert dict(stored) == dict(zip(gallery.ids, gallery.digests()))
    assert MilvusIndex.open(s).ntotal == n

    seen.clear()
    sync(tmp_path, gallery, progress=lambda done, total: seen.append(done))
    assert seen == []  # current: nothing inserted


def test_failed_ingestion_leaves_the_feature_cache_untouched(synth_tiny, model, tmp_path, monkeypatch):
    from cir.cache import FeatureCache
    from cir.data import load_benchmark
    from cir.stages.dense import DenseRetriever

    benchmark = load_benchmark("cirr", synth_tiny, "val")
    cache = FeatureCache(tmp_path / "cache")
    DenseRetriever(model, cache).encoder.index(benchmark.gallery)  # the cache entry, as `cir index` leaves it
    before = _digest_of_folder(tmp_path / "cache")

    calls = []

    def fail_after_one(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk full")  # a fault the engine cannot be made to raise on demand
        return real_insert(self, *args, **kwargs)

    import pymilvus

    real_insert = pymilvus.MilvusClient.insert
    monkeypatch.setattr(pymilvus.MilvusClient, "insert", fail_after_one)
    retriever = DenseRetriever(model, cache, index="milvus", index_params={"batch_size": 100})
    with pytest.raises(RuntimeError, match="disk full"):
        retriever.index(benchmark.gallery)
    assert _digest_of_folder(tmp_path / "cache") == before
    monkeypatch.undo()
    retriever.index(benchmark.gallery)
    assert retriever.images_encoded == 0 and retriever._index.ntotal == len(benchmark.gallery)
    assert _digest_of_folder(tmp_path / "cache") == before


def test_changed_gallery_updates_only_the_difference(vectors, tmp_path):
    ids, dense = vectors["ids"], vectors["dense"]
    first = GalleryVectors(ids[:500], dense=dense[:500])
    sync(tmp_path, first, fingerprint="v1")
    # 20 images removed, 64 added, one image rewritten (new vector under the same id)
    changed = dense.copy()
    changed[30] = changed[31]
    keep = list(range(20, len(ids)))
    second = GalleryVectors([ids[i] for i in keep], dense=changed[keep])
    inserted = []
    index = sync(tmp_path, second, fingerprint="v2", progress=lambda done, total: inserted.append(total))
    assert inserted[-1] == len(ids) - 500 + 1  # the added images and the rewritten one
    stored = dict(index.stored_digests())
    assert len(index.stored_digests()) == len(keep) and set(stored) == set(second.ids)
    scores, found = index.search(changed[30:31], 2)
    assert set(found[0]) == {ids[30], ids[31]}
    assert MilvusIndex.open(settings(tmp_path)).ntotal == len(keep)


def test_collection_of_other_weights_is_refused_until_rebuilt(vectors, tmp_path):
    gallery = GalleryVectors(vectors["ids"][:100], dense=vectors["dense"][:100])
    sync(tmp_path, gallery)
    other = {**META, "encoder": "blip-tiny-stage1-fp32-other"}
    with pytest.raises(CirError, match=r"built by encoder 'blip-tiny-stage1-fp32-abc'.*rebuild: true"):
        sync(tmp_path, gallery, meta=other)
    index = sync(tmp_path, gallery, meta=other, rebuild=True)
    assert index.ntotal == 100


def test_wrong_dimension_kind_missing_collection_and_bad_settings_are_one_line_errors(vectors, tmp_path):
    sync(tmp_path, GalleryVectors(vectors["ids"][:50], dense=vectors["dense"][:50]))
    with pytest.raises(CirError, match="holds fields 'dense:128', not the 'dense:64'") as info:
        sync(tmp_path, GalleryVectors(vectors["ids"][:50], dense=vectors["dense"][:50, :64]))
    assert "\n" not in str(info.value)
    with pytest.raises(CirError, match="not the 'sparse'"):
        sync(tmp_path, GalleryVectors(vectors["ids"][:50], sparse=vectors["sparse"][:50]))
    index = MilvusIndex.open(settings(tmp_path))
    with pytest.raises(CirError, match="has no sparse field"):
        index.search(vectors["sparse_queries"], 5)
    with pytest.raises(CirError, match="queries have 64 dimensions"):
        index.search(vectors["queries"][:, :64], 5)
    with pytest.raises(CirError, match=r"'missing' at .*milvus.db does not exist: build it first with `cir index"):
        MilvusIndex.open(settings(tmp_path, collection="missing"))
    with pytest.raises(CirError, match="the environment variable CIR_TEST_NO_SUCH_TOKEN is not set"):
        MilvusSettings.parse({"token": "env:CIR_TEST_NO_SUCH_TOKEN"})
    with pytest.raises(CirError, match="unknown milvus index setting"):
        MilvusSettings.parse({"nprobe": 3})
    with pytest.raises(CirError, match="index_type 'DISKANN' is not one of FLAT, IVF_FLAT, HNSW"):
        MilvusSettings.parse({"index_type": "diskann"})
    index.drop()
    with pytest.raises(CirError, match="searching Milvus collection 'gallery'"):
        index.search(vectors["queries"], 5)


def test_search_before_index_is_refused(model):
    from cir.stages.hybrid import HybridRetriever

    from cir.types import Query

    for retriever in (HybridRetriever(model), ):
        with pytest.raises(CirError, match="call index\\(gallery\\) before search"):
            retriever.search([Query("q", "x.png", "red")], 5)
    with pytest.raises(CirError, match="index 'csr' has no hybrid search"):
        HybridRetriever(model, index="csr")
    with pytest.raises(CirError, match="fusion_weights must be two numbers"):
        HybridRetriever(model, fusion_weights=[0.5])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_uri_fails_fast_naming_it(vectors):
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(CirError) as info:
        MilvusIndex.sync(GalleryVectors(vectors["ids"][:5], dense=vectors["dense"][:5]),
                         MilvusSettings.parse({"uri": uri, "collection": "g", "timeout": 5}), META, "fp")
    assert time.monotonic() - start < 10
    assert str(info.value).startswith(f"cannot reach Milvus at {uri}") and "\n" not in str(info.value)


def test_cli_index_exits_2_on_an_unreachable_uri(synth_tiny, tmp_path, capsys):
    import yaml

    from cir.cli import main

    config = yaml.safe_load(Path("configs/synth-tiny-milvus.yaml").read_text())
    uri = f"http://127.0.0.1:{_free_port()}"
    config["stage_one"]["index_params"]["uri"] = uri
    config["stage_two"] = None
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["index", "--config", str(path), "--root", str(synth_tiny), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach Milvus at {uri}" in err and "Traceback" not in err


def _hits(scores: np.ndarray, ids: list[list[str]]) -> list[dict[str, float]]:
    return [dict(zip(i, s.tolist())) for s, i in zip(scores, ids)]


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_hybrid_search_equals_its_fusion_in_numpy(vectors, tmp_path, fusion):
    gallery = GalleryVectors(vectors["ids"], dense=vectors["dense"], sparse=vectors["sparse"])
    index = sync(tmp_path, gallery)
    k, candidates, weights, rrf_k = 10, 30, (0.6, 0.4), 20
    scores, ids = index.hybrid_search(vectors["queries"], vectors["sparse_queries"], k, fusion, weights, rrf_k, candidates)
    dense = index.search(vectors["queries"], candidates)
    sparse = index.search(vectors["sparse_queries"], candidates)
    fused = milvus.fuse(dense, sparse, k, fusion, weights, rrf_k)
    for q, (want, got_ids, got_scores) in enumerate(zip(fused, ids, scores)):
        np.testing.assert_allclose(got_scores[: len(want)], [s for _, s in want], rtol=1e-6, atol=1e-7)
        # the same images with the same fused scores (ties may come in either order)
        every = {i: s for i, s in milvus.fuse(dense, sparse, 10 * k, fusion, weights, rrf_k)[q]}
        for image_id, score in zip(got_ids, got_scores.tolist()):
            assert every[image_id] == pytest.approx(score, rel=1e-6, abs=1e-7)


def _config(root: Path, cache: Path, kind: str, index: str, **extra) -> dict:
    return {"benchmark": {"name": "cirr", "release": "synth", "root": str(root), "split": "val"},
            "model": {"name": "blip-tiny", "pretrained": "synth"},
            "stage_one": {"kind": kind, "index": index, "k": 50, **extra}, "stage_two": {"kind": "dual-encoder"},
            "cache_dir": str(cache)}


@pytest.mark.parametrize("kind,local", [("dense", "flat"), ("sparse", "csr")])
def test_pipeline_with_milvus_gives_the_in_process_metrics(synth_tiny, model, tmp_path, kind, local):
    from cir.config import Config
    from cir.experiment import evaluate

    cache = tmp_path / "cache"
    ours = evaluate(Config.from_dict(_config(synth_tiny, cache, kind, "milvus")), model=model)
    theirs = evaluate(Config.from_dict(_config(synth_tiny, cache, kind, local)), model=model)
    assert ours.stages["stage1"] == f"stage 1 ({kind}, milvus)"
    for stage in ("stage1", "stage2"):
        for name, value in theirs.metrics[stage].items():
            if name != "ms/query":
                assert ours.metrics[stage][name] == pytest.approx(value, abs=0.05), (stage, name)
    assert (cache / "milvus" / "gallery.db").exists()  # embedded by default, under the cache folder


def test_hybrid_pipeline_from_the_shipped_config(synth_tiny, model, tmp_path):
    import yaml

    from cir.config import Config
    from cir.experiment import evaluate

    data = yaml.safe_load(Path("configs/synth-tiny-hybrid.yaml").read_text())
    data["benchmark"]["root"], data["cache_dir"], data["stage_two"] = str(synth_tiny), str(tmp_path / "c"), None
    result = evaluate(Config.from_dict(data), model=model)
    assert result.stages["stage1"] == "stage 1 (hybrid, milvus, weighted [0.6, 0.4])"
    run = result.runs["stage1"]
    assert len(run) == len(result.benchmark.queries)
    assert all(len(r.ids) == len(set(r.ids)) > 0 for r in run.values())
    assert 0 < result.metrics["stage1"]["recall@50"] <= 100
