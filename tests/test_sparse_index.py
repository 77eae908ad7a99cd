"""SparseIndex (csr and seismic backends), explanations, FLOPs and synthetic vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from cir.errors import CirError, DatasetNotFoundError, FormatError, UnknownIdError
from cir.stages.sparse_explain import explain, explain_result
from cir.index.sparse import SparseIndex, backends, expected_flops, top_k
from cir.index.sparse_csr import InvertedBlocks
from cir.index.sparse_seismic import SeismicBackend
from cir.bench.vector_stats import synthetic_sparse

VOCAB = 2000


def image_ids(n: int) -> list[str]:
    return [f"img{i:05d}" for i in range(n)]


def as_stored(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The gallery with its weights rounded to float16, as the csr backend stores them."""
    stored = matrix.copy()
    stored.data = stored.data.astype(np.float16).astype(np.float32)
    return stored


def brute_force(gallery: sp.csr_matrix, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k by dense float64 products; equal scores go to the lower row, as in the index."""
    scores = (queries.astype(np.float64) @ gallery.T.astype(np.float64)).toarray()
    order = np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture(scope="module")
def gallery() -> sp.csr_matrix:
    return synthetic_sparse(600, vocab=VOCAB, nnz_mean=30, zipf_a=0.9, seed=1)


@pytest.fixture(scope="module")
def queries() -> sp.csr_matrix:
    return synthetic_sparse(25, vocab=VOCAB, nnz_mean=12, zipf_a=0.9, seed=2)


def test_csr_search_equals_brute_force_products(gallery, queries):
    index = SparseIndex.build(gallery, image_ids(600))
    scores, ids = index.search(queries, 20)
    expected_scores, expected_rows = brute_force(as_stored(gallery), queries, 20)
    assert scores.shape == (25, 20) and scores.dtype == np.float32
    assert ids == [[f"img{r:05d}" for r in row] for row in expected_rows]
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    # Against the float32 gallery the scores differ only by float16 rounding of the image weights.
    exact = np.take_along_axis((queries @ gallery.T).toarray(), expected_rows, axis=1)
    np.testing.assert_allclose(scores, exact, rtol=2e-3)


def test_csr_stores_uint16_images_and_float16_weights(gallery, tmp_path):
    index = SparseIndex.build(gallery, image_ids(600))
    backend = index.backend
    assert isinstance(backend, InvertedBlocks)
    assert backend.images.dtype == np.uint16 and backend.weights_fp16.dtype == np.float16
    assert index.nnz == gallery.nnz
    assert index.nbytes == 4 * gallery.nnz + backend.indptr.nbytes
    path = index.save(tmp_path / "sparse")
    assert np.load(path / "images.npy").dtype == np.uint16
    assert np.load(path / "weights.npy").dtype == np.float16


def test_csr_spans_several_blocks_of_images(monkeypatch, queries):
    # Blocks of 64 images stand in for blocks of 65,536: image numbers restart in every block.
    monkeypatch.setattr(InvertedBlocks, "block_size", 64)
    gallery = synthetic_sparse(300, vocab=VOCAB, nnz_mean=30, zipf_a=0.9, seed=3)
    index = SparseIndex.build(gallery, image_ids(300))
    assert index.backend.indptr.shape == (5, VOCAB + 1)
    scores, ids = index.search(queries, 300)
    expected_scores, expected_rows = brute_force(as_stored(gallery), queries, 300)
    assert ids == [[f"img{r:05d}" for r in row] for row in expected_rows]
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_two_pass_csr_rescores_its_pool_exactly(monkeypatch, gallery, queries, tmp_path):
    monkeypatch.setattr(InvertedBlocks, "block_size", 64)  # candidates spread over ten blocks
    expected_scores, expected_rows = brute_force(as_stored(gallery), queries, 10)
    # a pool as large as the gallery: the first pass only picks the pool, so the result is exact
    whole = SparseIndex.build(gallery, image_ids(600), first_terms=3, rescored=600)
    scores, ids = whole.search(queries, 10)
    assert ids == [[f"img{r:05d}" for r in row] for row in expected_rows]
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    # a small pool: whatever comes back carries its exact score, and most of the true top 10 is found
    index = SparseIndex.build(gallery, image_ids(600), first_terms=4, rescored=40)
    scores, ids = index.search(queries, 10)
    scores_small, ids_small = scores, ids
    rows = np.array([[int(i[3:]) for i in row] for row in ids])
    true = np.take_along_axis((queries.astype(np.float64) @ as_stored(gallery).T).toarray(), rows, axis=1)
    np.testing.assert_allclose(scores, true, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), expected_rows.tolist())])
    assert 0.6 < found < 1.0  # approximate, yet close: a query's largest terms carry most of its score
    # the settings travel with the saved index; k beyond the pool still gets k results
    loaded = SparseIndex.load(index.save(tmp_path / "two-pass"))
    assert loaded.backend.params == {"threads": 1, "first_terms": 4, "rescored": 40}
    assert loaded.search(queries, 10)[1] == ids and len(loaded.search(queries, 50)[1][0]) == 50
    # k beyond the pool: the pool grows to k, every score still the full one, best first
    scores, ids = index.search(queries, 60)
    rows = np.array([[int(i[3:]) for i in row] for row in ids])
    true = np.take_along_axis((queries.astype(np.float64) @ as_stored(gallery).T).toarray(), rows, axis=1)
    np.testing.assert_allclose(scores, true, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # queries with no more terms than first_terms (and empty ones) are searched exactly; threads change nothing
    short = sp.vstack([queries[:3].multiply(queries[:3] >= 0.5 * queries[:3].max()).tocsr(), sp.csr_matrix((1, VOCAB))])
    short = sp.csr_matrix(short, dtype=np.float32)
    wide = SparseIndex.build(gallery, image_ids(600), first_terms=int(short.getnnz(1).max()), rescored=5, threads=3)
    assert wide.search(short, 10)[1] == SparseIndex.build(gallery, image_ids(600)).search(short, 10)[1]
    threaded = SparseIndex.build(gallery, image_ids(600), first_terms=4, rescored=40, threads=3).search(queries, 10)
    assert threaded[1] == ids_small and np.array_equal(threaded[0], scores_small)
    # the bench and the search pick the same first terms
    np.testing.assert_array_equal(InvertedBlocks.first_pass_terms(np.array([0.5, 2.0, 0.5, 1.0]), 3), [1, 3, 0])
    for bad in ({"first_terms": -1}, {"first_terms": 8.5}, {"rescored": 0}, {"first_terms": True}):
        with pytest.raises(CirError, match=r"first_terms \(>= 0\) and rescored \(>= 1\) are whole numbers"):
            SparseIndex.build(gallery, image_ids(600), **bad)


def test_k_beyond_the_gallery_and_empty_queries():
    gallery = synthetic_sparse(5, vocab=50, nnz_mean=8, seed=4)
    index = SparseIndex.build(gallery, image_ids(5))
    queries = sp.vstack([synthetic_sparse(1, vocab=50, nnz_mean=4, seed=5), sp.csr_matrix((1, 50), dtype=np.float32)])
    scores, ids = index.search(queries, 10)
    assert scores.shape == (2, 5) and all(sorted(row) == image_ids(5) for row in ids)
    np.testing.assert_array_equal(scores[1], np.zeros(5, np.float32))  # no terms: every image scores 0
    assert ids[1] == image_ids(5)  # ties keep gallery order
    assert index.search(sp.csr_matrix((0, 50), dtype=np.float32), 3)[0].shape == (0, 3)


def test_top_k_is_exact_with_ties_and_huge_query_weights():
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 50, 5000).astype(np.float32)  # many ties
    best = top_k(scores, 70)
    expected = np.lexsort((np.arange(5000), -scores))[:70]
    np.testing.assert_array_equal(best, expected)
    gallery = synthetic_sparse(40, vocab=30, nnz_mean=6, seed=7)
    index = SparseIndex.build(gallery, image_ids(40))
    query = synthetic_sparse(1, vocab=30, nnz_mean=5, seed=8) * 1e6  # far above any stored weight
    scores, ids = index.search(query, 5)
    expected_scores, expected_rows = brute_force(as_stored(gallery), query, 5)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    assert ids[0] == [f"img{r:05d}" for r in expected_rows[0]]


def test_parallel_search_gives_the_same_results(gallery, queries):
    one = SparseIndex.build(gallery, image_ids(600)).search(queries, 12)
    several = SparseIndex.build(gallery, image_ids(600), threads=3).search(queries, 12)
    np.testing.assert_array_equal(one[0], several[0])
    assert one[1] == several[1]


def test_save_load_round_trip(gallery, queries, tmp_path):
    index = SparseIndex.build(gallery, image_ids(600), threads=2)
    before = index.search(queries, 15)
    index.save(tmp_path / "sparse")
    index.save(tmp_path / "sparse")  # replaces the old folder, leaves nothing else behind
    assert [p.name for p in tmp_path.iterdir()] == ["sparse"]
    loaded = SparseIndex.load(tmp_path / "sparse")
    after = loaded.search(queries, 15)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]
    assert loaded.stats() == index.stats() and loaded.backend.params["threads"] == 2
    assert loaded.stats()["terms_per_image_mean"] == pytest.approx(gallery.nnz / 600)
    assert SparseIndex.load(tmp_path / "sparse", threads=1).backend.params["threads"] == 1


def test_explanations_sum_to_the_score(gallery, queries):
    index = SparseIndex.build(gallery, image_ids(600))
    vocab = [f"term{t}" for t in range(VOCAB)]
    scores, ids = index.search(queries[:3], 4)
    for q in range(3):
        for rank, image_id in enumerate(ids[q]):
            terms = explain_result(index, queries[q], image_id, vocab, top=None)
            assert sum(c for _, c in terms) == pytest.approx(float(scores[q, rank]), rel=1e-5)
            contributions = [c for _, c in terms]
            assert contributions == sorted(contributions, reverse=True)
    row = 17
    full = explain(queries[0], gallery[row], vocab.__getitem__, top=None)
    assert sum(c for _, c in full) == pytest.approx(float((queries[0] @ gallery[row].T).toarray()[0, 0]), rel=1e-6)
    assert explain(queries[0], gallery[row], vocab, top=2) == full[:2]


def test_explain_names_the_shared_terms():
    vocab = ["red", "dress", "sleeveless", "blue", "long"]
    query = sp.csr_matrix(np.array([[1.5, 1.0, 0.5, 0.0, 0.0]], np.float32))
    image = np.array([2.0, 0.0, 1.0, 3.0, 0.0], np.float32)  # a plain array row works too
    assert explain(query, image, vocab) == [("red", 3.0), ("sleeveless", 0.5)]
    with pytest.raises(CirError, match="one row"):
        explain(sp.csr_matrix(np.ones((2, 5), np.float32)), image, vocab)


def test_expected_flops_matches_its_definition():
    queries = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 1, 1]], np.float32))
    images = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]], np.float32))
    # p_q = [1/2, 0, 1, 1/2], p_d = [3/4, 1/4, 1/4, 1/4]
    assert expected_flops(queries, images) == pytest.approx(0.5 * 0.75 + 1 * 0.25 + 0.5 * 0.25)
    # The expected work equals the average shared-term count over all pairs.
    q = synthetic_sparse(30, vocab=VOCAB, nnz_mean=10, seed=9)
    d = synthetic_sparse(200, vocab=VOCAB, nnz_mean=20, seed=10)
    shared = ((q != 0).astype(np.float64) @ (d != 0).astype(np.float64).T).toarray().mean()
    assert expected_flops(q, d) == pytest.approx(shared)
    with pytest.raises(CirError, match="queries have 4 terms but the images 3"):
        expected_flops(queries, sp.csr_matrix((2, 3), dtype=np.float32))


def test_synthetic_sparse_vectors_have_distinct_zipf_terms():
    matrix = synthetic_sparse(2000, vocab=VOCAB, nnz_mean=40, zipf_a=1.0, seed=11)
    assert matrix.shape == (2000, VOCAB) and matrix.dtype == np.float32
    assert matrix.has_canonical_format  # sorted, no duplicate terms in a row
    assert 39 < matrix.nnz / 2000 < 41 and (matrix.data > 0).all()
    frequencies = np.sort(np.bincount(matrix.indices, minlength=VOCAB))[::-1]
    assert frequencies[0] > 10 * frequencies[VOCAB // 2]  # a head of common terms and a long tail
    again = synthetic_sparse(2000, vocab=VOCAB, nnz_mean=40, zipf_a=1.0, seed=11)
    assert (matrix != again).nnz == 0


def test_bad_galleries_and_queries_are_refused_clearly(gallery):
    with pytest.raises(CirError, match="70,000 terms is too large.*uint16.*65,536"):
        SparseIndex.build(sp.csr_matrix((3, 70_000), dtype=np.float32), image_ids(3))
    negative = sp.csr_matrix(np.array([[0.5, 0.0], [0.0, -1.0]], np.float32))
    with pytest.raises(CirError, match="image row 1, term 1: weight -1.0 is not in"):
        SparseIndex.build(negative, image_ids(2))
    with pytest.raises(CirError, match="scipy sparse matrix"):
        SparseIndex.build(np.ones((2, 3)), image_ids(2))
    with pytest.raises(CirError, match="600 vectors but 2 ids"):
        SparseIndex.build(gallery, ["a", "b"])
    with pytest.raises(CirError, match="unknown sparse index backend 'lucene'"):
        SparseIndex.build(gallery, image_ids(600), backend="lucene")
    with pytest.raises(CirError, match=r"unknown setting.*query_cut.*csr sparse backend \(known: threads, first_terms"):
        SparseIndex.build(gallery, image_ids(600), query_cut=5)
    index = SparseIndex.build(gallery, image_ids(600))
    with pytest.raises(CirError, match="queries have 10 terms but the index vocabulary has 2000"):
        index.search(sp.csr_matrix((1, 10), dtype=np.float32), 5)
    with pytest.raises(UnknownIdError, match="'nope' is not in this sparse index"):
        index.image_weights("nope", np.array([1]))


def test_loading_a_broken_folder_names_the_file(gallery, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="sparse index not found"):
        SparseIndex.load(tmp_path / "missing")
    path = SparseIndex.build(gallery, image_ids(600)).save(tmp_path / "sparse")
    (path / "images.npy").rename(path / "moved.npy")
    with pytest.raises(DatasetNotFoundError, match="sparse index file not found: .*images.npy"):
        SparseIndex.load(path)
    (path / "moved.npy").rename(path / "images.npy")
    np.save(path / "weights.npy", np.zeros(3, np.float32))
    with pytest.raises(FormatError, match="weights.npy: expected float16 values"):
        SparseIndex.load(path)
    settings = json.loads((path / "settings.json").read_text())
    (path / "settings.json").write_text(json.dumps({**settings, "format": 99}))
    with pytest.raises(FormatError, match="settings.json: not a cir sparse index"):
        SparseIndex.load(path)


def test_seismic_backend_is_registered_and_lazy():
    assert backends.names() == ["csr", "seismic"]


def test_seismic_backend_finds_the_exact_neighbours_on_a_small_gallery(gallery, queries, tmp_path):
    pytest.importorskip("seismic", reason="optional backend: pip install 'cir[seismic]'")
    index = SparseIndex.build(gallery, image_ids(600), backend="seismic", n_postings=600, query_cut=40, heap_factor=1.0)
    scores, ids = index.search(queries, 10)
    _, expected_rows = brute_force(gallery, queries, 10)
    recall = np.mean([len(set(found) & {f"img{r:05d}" for r in row}) / 10 for found, row in zip(ids, expected_rows)])
    assert recall > 0.9
    assert index.nbytes > 0 and index.nnz == gallery.nnz and index.stats()["backend"] == "seismic"
    terms = explain_result(index, queries[0], ids[0][0], lambda t: str(t), top=None)
    assert sum(c for _, c in terms) == pytest.approx(float(scores[0, 0]), rel=1e-4)
    index.save(tmp_path / "seismic")
    loaded = SparseIndex.load(tmp_path / "seismic")
    assert loaded.backend.params["query_cut"] == 40
    assert loaded.search(queries, 10)[1] == ids
    assert SparseIndex.load(tmp_path / "seismic", query_cut=5, threads=2).backend.params["query_cut"] == 5


def test_seismic_answers_are_matched_to_their_queries(monkeypatch):
    pytest.importorskip("seismic", reason="optional backend: pip install 'cir[seismic]'")

    class ReversedIndex:
        """Answers a batch in reverse order, as Seismic's parallel search may: query i finds row i + 1."""

        def print_space_usage_byte(self) -> None:
            import os

            os.write(1, b"Space Usage:\n\tTotal: 1234 Bytes\n")

        def batch_search(self, query_ids, components, values, k, **settings):
            return [[(q, 1.0, str(int(q) + 1))] for q in query_ids][::-1]

    backend = SeismicBackend(ReversedIndex(), SeismicBackend.settings({}), np.zeros(0, np.int64))
    assert backend.nbytes == 1234
    queries = sp.csr_matrix(np.eye(3, 5, dtype=np.float32))
    scores, rows = backend.search(queries, 2)
    assert rows.tolist() == [[1, -1], [2, -1], [3, -1]]
    assert scores[:, 1].tolist() == [-np.inf] * 3
