"""DenseIndex: exact flat search, approximate kinds' recall, k beyond the gallery, save/load, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cir.errors import CirError, DatasetNotFoundError, FormatError
from cir.index.dense_faiss import DenseIndex, use_gpu
from cir.bench.vector_stats import synthetic_dense


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors scattered around a few random centres, as real embeddings are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def image_ids(n: int) -> list[str]:
    return [f"img{i:05d}" for i in range(n)]


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_flat_search_equals_brute_force_top_k():
    gallery, queries = synthetic_dense(500, 32, seed=1), synthetic_dense(20, 32, seed=2)
    index = DenseIndex.build(gallery, image_ids(500))
    scores, ids = index.search(queries, 10)
    expected_scores, expected_rows = brute_force(gallery, queries, 10)
    assert scores.shape == (20, 10) and scores.dtype == np.float32
    assert ids == [[f"img{r:05d}" for r in row] for row in expected_rows]
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert index.ntotal == 500 and index.dim == 32 and index.nbytes == 500 * 32 * 4


@pytest.mark.parametrize("kind, params", [("ivf", {"nlist": 16, "nprobe": 4}), ("hnsw", {"M": 16, "ef_search": 64})])
def test_approximate_kinds_recall_flat_results(kind, params):
    gallery, queries = clustered(2000, 32, 20, seed=3), clustered(50, 32, 20, seed=4)
    ids = image_ids(2000)
    _, exact = DenseIndex.build(gallery, ids).search(queries, 10)
    index = DenseIndex.build(gallery, ids, kind=kind, **params)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact, found)])
    assert recall > 0.9, f"{kind} recall@10 {recall:.3f}"
    assert index.nbytes >= 2000 * 32 * 4


def test_k_beyond_the_gallery_returns_every_image_without_placeholder_ids():
    gallery = synthetic_dense(7, 16, seed=5)
    for kind, params in [("flat", {}), ("ivf", {"nlist": 2, "nprobe": 1}), ("hnsw", {"M": 4})]:
        index = DenseIndex.build(gallery, image_ids(7), kind=kind, **params)
        scores, ids = index.search(synthetic_dense(3, 16, seed=6), 50)
        assert scores.shape == (3, 7)
        assert all(sorted(row) == image_ids(7) for row in ids), kind
        assert np.isfinite(scores).all() and (np.diff(scores, axis=1) <= 1e-6).all()


def test_ivf_with_one_probe_still_fills_every_query():
    # One probed cell of 4 holds fewer than k vectors: the exact completion must fill the row.
    gallery = clustered(400, 16, 4, seed=7)
    index = DenseIndex.build(gallery, image_ids(400), kind="ivf", nlist=8, nprobe=1)
    scores, ids = index.search(clustered(10, 16, 4, seed=8), 300)
    assert all(len(row) == 300 and len(set(row)) == 300 for row in ids)
    assert np.isfinite(scores).all()


KINDS_WITH_SETTINGS = [("flat", {}), ("ivf", {"nlist": 8, "nprobe": 3}), ("hnsw", {"M": 8, "ef_search": 40})]


@pytest.mark.parametrize("kind, params", KINDS_WITH_SETTINGS)
def test_save_load_round_trip_gives_identical_results(tmp_path, kind, params):
    gallery, queries = clustered(300, 24, 6, seed=9), clustered(12, 24, 6, seed=10)
    index = DenseIndex.build(gallery, image_ids(300), kind=kind, **params)
    before = index.search(queries, 15)
    path = index.save(tmp_path / "dense")
    assert sorted(p.name for p in path.iterdir()) == ["ids.json", "index.faiss", "settings.json"]
    index.save(tmp_path / "dense")  # replacing an existing index works and leaves no temporary folders
    assert [p.name for p in tmp_path.iterdir()] == ["dense"]
    loaded = DenseIndex.load(tmp_path / "dense")
    after = loaded.search(queries, 15)
    assert loaded.kind == kind and loaded.params == index.params and loaded.ids == index.ids
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]


def test_unknown_kind_setting_and_device_are_clear_errors():
    gallery = synthetic_dense(10, 8, seed=11)
    with pytest.raises(CirError, match="unknown dense index kind 'pq'.*flat, ivf, hnsw"):
        DenseIndex.build(gallery, image_ids(10), kind="pq")
    with pytest.raises(CirError, match="unknown setting.*nprobe.*flat"):
        DenseIndex.build(gallery, image_ids(10), nprobe=3)
    with pytest.raises(CirError, match="unknown device 'tpu'"):
        DenseIndex.build(gallery, image_ids(10), device="tpu")


def test_gallery_errors_name_the_problem():
    gallery = synthetic_dense(5, 8, seed=12)
    with pytest.raises(CirError, match="5 vectors but 4 ids"):
        DenseIndex.build(gallery, image_ids(4))
    with pytest.raises(CirError, match="duplicate image id 'a'"):
        DenseIndex.build(gallery, ["a", "b", "a", "c", "d"])
    with pytest.raises(CirError, match="vector 2 .*'img00002'.* norm 2.0000"):
        DenseIndex.build(gallery * np.array([[1], [1], [2], [1], [1]], np.float32), image_ids(5))
    index = DenseIndex.build(gallery, image_ids(5))
    with pytest.raises(CirError, match="queries have 4 dimensions but the index holds 8"):
        index.search(np.ones((1, 4), np.float32), 3)


def test_gpu_request_without_a_gpu_gives_the_install_hint(monkeypatch):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert use_gpu("auto", "flat") is False
    with pytest.raises(CirError, match=r"pip install 'cir\[gpu\]'"):
        DenseIndex.build(synthetic_dense(4, 8, seed=13), image_ids(4), device="gpu")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    assert use_gpu("auto", "flat") is True and use_gpu("auto", "hnsw") is False and use_gpu("cpu", "flat") is False
    with pytest.raises(CirError, match="no GPU version of the hnsw"):
        use_gpu("gpu", "hnsw")


def test_loading_a_broken_folder_names_the_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dense index not found"):
        DenseIndex.load(tmp_path / "missing")
    path = DenseIndex.build(synthetic_dense(6, 8, seed=14), image_ids(6)).save(tmp_path / "dense")
    (path / "ids.json").write_text(json.dumps(["only-one"]))
    with pytest.raises(FormatError, match="ids.json: expected a list of 6 image ids"):
        DenseIndex.load(path)
    (path / "index.faiss").write_bytes(b"not faiss")
    with pytest.raises(FormatError, match="index.faiss: not a readable faiss index"):
        DenseIndex.load(path)
