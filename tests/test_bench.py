"""`cir bench`: the command end to end on a tiny generated benchmark, the power-law fit, and the statistics matchers
that draw gallery vectors like a model's real ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from cir.bench import fit_power_law, parse_scale
from cir.bench.scaling import scaling_fits
from cir.bench.stage_one import SEISMIC_MISSING, recall_at_k
from cir.bench.vectors import RealVectors, ScaledVectors
from cir.cli import main
from cir.errors import CirError
from cir.bench.vector_stats import DenseStatistics, SparseStatistics, synthetic_dense, synthetic_sparse

STAGE_ONE_FIELDS = ("build_s", "index_bytes", "single_p50_ms", "single_p95_ms", "single_qps", "batch_qps",
                    "batch_ms_per_query", "recall", "speedup_single", "speedup_batch", "size_ratio", "flops_per_pair")


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    """A tiny generated synthetic benchmark (a few hundred 64 px images), written once for this module."""
    from cir.data.synth import generate

    return generate(tmp_path_factory.mktemp("bench") / "synth", size="tiny", workers=1)


@pytest.fixture(scope="module")
def val_gallery_size(tiny_synth) -> int:
    from cir.data import load_benchmark

    return len(load_benchmark("cirr", tiny_synth, "val").gallery)


def run_cli(*args: str) -> int:
    return main(["bench", "--threads", "1", *args])


def test_bench_stage_one_and_two_write_json_and_markdown(tiny_synth, val_gallery_size, tmp_path, monkeypatch):
    monkeypatch.setattr("cir.bench.stage_one.seismic_available", lambda: False)
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    assert run_cli("--scale", "2k", "--queries", "5", "--candidates", "5,20", "--skip", "e2e,milvus", "--data", str(tiny_synth),
                   "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--markdown", str(markdown)) == 0
    result = json.loads(out.read_text())

    assert result["settings"]["scales"] == [2000] and result["settings"]["skip"] == ["e2e", "milvus"]
    assert "weights" in result["model"]["weights"] and str(tiny_synth) in result["model"]["data"]
    # The real gallery is smaller than 2k: its rows come first, the rest are drawn to match them.
    assert result["vectors"]["dense"]["real_rows"] == val_gallery_size < 2000
    assert result["vectors"]["dense"]["beyond"]["fitted_rows"] == val_gallery_size

    rows = {r["method"]: r for r in result["stage_one"]["rows"]}
    milvus_rows = {"dense milvus flat", "dense milvus ivf", "dense milvus hnsw", "sparse milvus"}
    assert set(rows) == {"dense flat", "dense ivf", "dense hnsw", "sparse csr", "sparse csr two-pass",
                         "sparse seismic"} | milvus_rows
    assert rows["sparse seismic"]["status"] == SEISMIC_MISSING
    assert all(rows[name]["status"] == "skipped (--skip milvus)" for name in milvus_rows)
    for name in ("dense flat", "dense ivf", "dense hnsw", "sparse csr", "sparse csr two-pass"):
        row = rows[name]
        assert row["status"] == "ok" and row["images"] == 2000
        assert all(field in row for field in STAGE_ONE_FIELDS), name
        assert 0 < row["single_p50_ms"] <= row["single_p95_ms"] and row["batch_qps"] > 0 and row["index_bytes"] > 0
        assert 0.0 <= row["recall"] <= 1.0
    flat = rows["dense flat"]
    assert flat["speedup_single"] == flat["speedup_batch"] == flat["size_ratio"] == 1.0
    assert flat["index_bytes"] == 2000 * 128 * 4  # blip-tiny: 128-dimensional float32 embeddings
    assert rows["dense hnsw"]["recall_against"] == "dense flat" and rows["sparse csr"]["recall"] == 1.0
    assert rows["sparse csr"]["speedup_single"] == pytest.approx(rows["sparse csr"]["single_qps"] / flat["single_qps"])
    two_pass = rows["sparse csr two-pass"]
    assert two_pass["recall_against"] == "sparse csr" and two_pass["params"]["first_terms"] == 8
    assert two_pass["index_bytes"] == rows["sparse csr"]["index_bytes"]  # the same index, searched in two passes
    assert 0 < two_pass["flops_per_pair"] != rows["sparse csr"]["flops_per_pair"]
    assert result["stage_one"]["scaling"] == []  # one size: nothing to fit

    stage_two = result["stage_two"]
    assert [r["candidates"] for r in stage_two["rows"]] == [5, 20]
    for row in stage_two["rows"]:
        assert row["cached_p50_ms"] > 0 and row["encoded_p50_ms"] > 0
        assert row["encoded_over_cached"] == pytest.approx(row["encoded_mean_ms"] / row["cached_mean_ms"])
    assert stage_two["requirement"]["met"] is None  # K=50 was not asked for
    assert result["end_to_end"] == {"skipped": "--skip e2e"}

    text = markdown.read_text()
    assert "**Stage one: search speed**" in text and "| dense flat | 2,000 |" in text
    assert "sparse seismic: not installed: pip install 'cir[seismic]'" in text
    assert "**Stage two: reranking K candidates**" in text and "end to end skipped" in text


def test_bench_end_to_end_times_the_pipeline_per_query(tiny_synth, val_gallery_size, tmp_path):
    out = tmp_path / "bench.json"
    assert run_cli("--scale", "1k", "--queries", "3", "--skip", "stage1,stage2", "--encode-images", "40",
                   "--data", str(tiny_synth), "--cache-dir", str(tmp_path / "cache"), "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert result["stage_one"] == {"skipped": "--skip stage1"} and "vectors" not in result
    section = result["end_to_end"]
    assert section["queries"] == 3 and section["rows"]
    for row in section["rows"]:
        assert row["gallery"] == val_gallery_size
        # Each query's total is its stage-one plus stage-two time, so every percentile is at least either part's.
        assert row["total_p50_ms"] >= max(row["stage1_p50_ms"], row["stage2_p50_ms"]) > 0
        assert row["total_p95_ms"] >= row["total_p50_ms"]
        assert row["peak_rss_bytes"] > 0 and row["python_peak_bytes"] > 0
    assert section["encoding"]["images"] == 40 and section["encoding"]["images_per_second"] > 0


def test_bench_without_a_dataset_generates_one_and_skips_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    assert run_cli("--scale", "500", "--queries", "2", "--skip", "stage2,ivf,hnsw,seismic", "--data",
                   str(tmp_path / "missing"), "--cache-dir", str(tmp_path / "cache"), "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert "generated for this run" in result["model"]["data"]
    assert "cir data synth --out" in result["end_to_end"]["skipped"]
    assert not (tmp_path / "cache").exists()  # a throw-away gallery's features stay out of the user's cache
    skipped = [r for r in result["stage_one"]["rows"] if r["status"].startswith("skipped")]
    assert {r["method"] for r in skipped} == {"dense ivf", "dense hnsw", "sparse seismic"}


def test_bench_refuses_bad_options_in_one_line(tmp_path, capsys):
    assert run_cli("--skip", "stage3", "--data", str(tmp_path)) == 2
    assert "unknown name(s) to skip: stage3" in capsys.readouterr().err
    assert run_cli("--scale", "ten", "--data", str(tmp_path)) == 2
    assert "'ten' is not a positive number" in capsys.readouterr().err


def test_parse_scale_reads_k_and_m_suffixes():
    assert [parse_scale(s) for s in ("2k", "10K", "1m", "1.5m", "500")] == [2000, 10_000, 1_000_000, 1_500_000, 500]
    for bad in ("", "0", "k", "-3k", "1g"):
        with pytest.raises(CirError):
            parse_scale(bad)


def test_power_law_fit_recovers_a_known_exponent():
    sizes = np.array([1e3, 1e4, 1e5, 1e6])
    wobble = np.array([1.02, 0.98, 1.01, 0.99])  # measurement noise of a few percent
    law = fit_power_law(sizes, 0.003 * sizes**1.37 * wobble)
    assert law.exponent == pytest.approx(1.37, abs=0.01)
    assert law.coefficient == pytest.approx(0.003, rel=0.1)
    assert [n for n, _ in law.points] == [1000, 10_000, 100_000, 1_000_000]
    assert fit_power_law([1e3, 1e3], [1.0, 2.0]) is None  # one distinct size: no slope
    assert fit_power_law([1e3, 1e4, 1e5], [0.0, 5.0, 50.0]).exponent == pytest.approx(1.0)  # zero costs are left out

    rows = [{"method": "m", "status": "ok", "images": n, "build_s": 2e-6 * n, "index_bytes": 512 * n,
             "single_p50_ms": 0.5, "batch_ms_per_query": 1e-3 * n**0.5} for n in (1000, 8000, 64000)]
    fits = {f["cost"]: f["exponent"] for f in scaling_fits(rows + [{"method": "x", "status": "not installed", "images": 10}])}
    assert fits == pytest.approx({"build_s": 1.0, "index_bytes": 1.0, "single_p50_ms": 0.0, "batch_ms_per_query": 0.5})


def test_two_pass_flops_count_first_terms_postings_and_lookups():
    from cir.bench.stage_one import _sparse_flops
    from cir.index.sparse import SparseIndex
    from cir.index.sparse import expected_flops

    gallery = sp.csr_matrix(np.array([[1, 1, 0, 0, 1], [1, 0, 1, 0, 0], [0, 0, 1, 1, 0], [1, 0, 0, 0, 1]], np.float32))
    queries = sp.csr_matrix(np.array([[3, 2, 1, 0, 0], [0, 0, 1, 2, 3]], np.float32))
    ids = [str(i) for i in range(4)]
    exact = SparseIndex.build(gallery, ids)
    assert _sparse_flops(queries, gallery, exact) == expected_flops(queries, gallery)
    two_pass = SparseIndex.build(gallery, ids, first_terms=2, rescored=3)
    first = sp.csr_matrix(np.array([[3, 2, 0, 0, 0], [0, 0, 0, 2, 3]], np.float32))  # each query's 2 largest terms
    # plus one lookup per remaining term (1 a query) for each of the 3 rescored images, per query-image pair
    assert _sparse_flops(queries, gallery, two_pass) == pytest.approx(expected_flops(first, gallery) + 2 * 3 / (2 * 4))


@pytest.fixture(scope="module")
def real_sparse() -> sp.csr_matrix:
    """Zipf-distributed rows plus one term every row holds (as a learned head's bias terms do)."""
    matrix = synthetic_sparse(3000, vocab=4000, nnz_mean=30, zipf_a=1.1, seed=5).tolil()
    matrix[:, 17] = 0.75
    return matrix.tocsr()


def test_sparse_statistics_reproduce_nnz_and_document_frequencies(real_sparse):
    drawn = SparseStatistics.fit(real_sparse).sample(20_000, seed=1)
    assert drawn.shape == (20_000, 4000) and drawn.has_canonical_format
    real_nnz, drawn_nnz = np.diff(real_sparse.indptr), np.diff(drawn.indptr)
    assert drawn_nnz.mean() == pytest.approx(real_nnz.mean(), rel=0.01)
    assert drawn_nnz.min() >= real_nnz.min() and drawn_nnz.max() <= real_nnz.max()
    real_df = np.bincount(real_sparse.indices, minlength=4000) / real_sparse.shape[0]
    drawn_df = np.bincount(drawn.indices, minlength=4000) / drawn.shape[0]
    assert np.abs(drawn_df - real_df).max() < 0.02
    assert drawn_df[17] > 0.99  # drawing in proportion to df alone would leave the always-on term out of many rows
    assert not drawn_df[real_df == 0].any()
    # Each drawn weight is one the term was seen with.
    for term in np.argsort(-real_df)[:5]:
        seen = set(real_sparse[:, term].data.tolist())
        assert set(drawn[:, term].data.tolist()) <= seen


def test_dense_statistics_reproduce_mean_and_covariance():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((4000, 16)) @ rng.standard_normal((16, 16)) * 0.2 + rng.standard_normal(16)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    drawn = DenseStatistics.fit(real).sample(40_000, seed=4)
    assert drawn.dtype == np.float32 and np.allclose(np.linalg.norm(drawn, axis=1), 1.0, atol=1e-5)
    assert np.abs(drawn.mean(axis=0) - real.mean(axis=0)).max() < 0.01
    assert np.abs(np.cov(drawn.T) - np.cov(real.T)).max() < 0.1 * np.abs(np.cov(real.T)).max()
    low_rank = DenseStatistics.fit(real, rank=3)  # the diagonal residual keeps each dimension's variance
    assert low_rank.rank == 3
    assert np.allclose(np.var(low_rank.sample(40_000, seed=5), axis=0), np.var(real, axis=0), rtol=0.25)


def test_scaled_vectors_put_real_rows_first_and_say_how_the_rest_were_made(real_sparse):
    dense = synthetic_dense(300, 8, seed=6)
    real = RealVectors([str(i) for i in range(300)], [], dense, dense[:4], real_sparse[:300], real_sparse[300:304])
    vectors = ScaledVectors(real)
    gallery = vectors.dense_gallery(1000)
    assert gallery.shape == (1000, 8) and np.array_equal(gallery[:300], dense)
    assert np.array_equal(vectors.dense_gallery(100), dense[:100])
    sparse_gallery = vectors.sparse_gallery(700)
    assert sparse_gallery.shape == (700, 4000) and (sparse_gallery[:300] != real_sparse[:300]).nnz == 0
    assert vectors.sparse_queries is real.sparse_queries
    sources = vectors.sources()
    assert sources["sparse"]["real_rows"] == 300 and "sparse image head" in sources["sparse"]["text"]
    assert sources["dense"]["beyond"]["rank"] == 8


def test_recall_counts_results_scoring_at_least_the_exact_kth():
    gallery = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]  # rows 0 and 4 tie
    queries = np.array([[1.0, 0.5, 0.0, 0.0]], np.float32)
    true_scores = lambda q, rows: gallery[rows] @ queries[q]  # noqa: E731
    assert recall_at_k([["4", "0"]], np.array([1.0]), true_scores, 2) == 1.0  # a tie at the k-th score is found
    assert recall_at_k([["0", "2"]], np.array([1.0]), true_scores, 2) == 0.5


def test_bench_milvus_rows_and_operating_points_at_equal_recall(tiny_synth, tmp_path):
    """milvus-lite rows with the others' columns, and every approximate index's setting at recall@10 >= 0.99."""
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    assert run_cli("--scale", "1500", "--queries", "8", "--skip", "stage2,e2e,seismic", "--data", str(tiny_synth),
                   "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--markdown", str(markdown)) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["stage_one"]["rows"]}
    for name in ("dense milvus flat", "dense milvus ivf", "dense milvus hnsw", "sparse milvus"):
        row = rows[name]
        assert row["status"] == "ok" and row["images"] == 1500, name
        assert all(field in row for field in STAGE_ONE_FIELDS), name
        assert row["index_bytes"] > 0 and row["build_s"] > 0 and row["batch_qps"] > 0
        assert row["recall_against"] == ("dense flat" if name.startswith("dense") else "sparse csr")
    # Milvus's exact searches find what the exact in-process indexes find
    assert rows["dense milvus flat"]["recall"] == 1.0 and rows["sparse milvus"]["recall"] == 1.0
    assert rows["dense milvus flat"]["op_note"] == "exact search (no parameter)"
    for name, param in (("dense ivf", "nprobe"), ("dense hnsw", "ef_search"), ("sparse csr two-pass", "rescored"),
                        ("dense milvus ivf", "nprobe"), ("dense milvus hnsw", "ef")):
        row = rows[name]
        assert row["op_param"] == param, name
        assert row["op_value"] is not None and row["op_recall"] >= 0.99, name
        # the sweep stops at the first value reaching the target: every value before it fell short
        assert all(recall < 0.99 for _, recall in row["op_sweep"][:-1]) and row["op_sweep"][-1][0] == row["op_value"]
        assert row["op_single_p50_ms"] > 0 and row["op_batch_qps"] > 0
    text = markdown.read_text()
    assert "**Stage one at recall@10 >= 0.99**" in text and "| dense milvus hnsw | 1,500 | ef |" in text
    assert "| dense milvus flat | 1,500 |" in text


def test_a_milvus_row_that_fails_is_recorded_and_the_bench_goes_on(monkeypatch):
    """A database call that fails (at 1M images a milvus-lite sparse search once timed out after its retries) costs
    its row, not the hours of rows measured before it. The timeout is faked: it cannot be caused at test size."""
    from cir.bench import stage_one
    from cir.errors import CirError

    real_measure = stage_one.measure

    def measure(method, *args):
        if method.name == "dense milvus ivf":
            raise CirError("searching Milvus collection 'bench': [search] Retry timeout: 600.0s")
        return real_measure(method, *args)

    monkeypatch.setattr(stage_one, "measure", measure)
    rng = np.random.default_rng(0)

    def unit(rows):
        vectors = rng.standard_normal((rows, 8)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    class Vectors:
        dense_queries = unit(4)
        sparse_queries = sp.random(4, 50, density=0.2, format="csr", dtype=np.float32, random_state=0)

        def dense_gallery(self, n):
            return unit(n)

        def sparse_gallery(self, n):
            return sp.random(n, 50, density=0.2, format="csr", dtype=np.float32, random_state=1)

        real = type("Real", (), {"queries": list(range(4))})

    from cir.bench.runner import BenchSettings, run_stage_one

    skip = frozenset({"ivf", "hnsw", "two-pass", "seismic", "milvus-hnsw"})
    seen = []  # the section as measured so far, handed on after each row (cir bench rewrites its JSON with it)
    section = run_stage_one(Vectors(), BenchSettings(scales=(300,), k=5, queries=4, skip=skip, threads=1),
                            lambda partial: seen.append([r["method"] for r in partial["rows"]]))
    rows = {r["method"]: r for r in section["rows"]}
    assert rows["dense milvus ivf"]["status"].startswith("failed: searching Milvus collection 'bench'")
    assert rows["dense milvus flat"]["status"] == "ok" and rows["sparse milvus"]["status"] == "ok"
    assert rows["sparse milvus"]["recall"] == 1.0
    assert [len(names) for names in seen] == list(range(1, len(rows) + 1)) and seen[-1] == list(rows)
    assert "partial" not in section and "scaling" in section


def test_timing_budget_samples_a_slow_call_instead_of_timing_every_item():
    import time

    from cir.bench.timing import best_of, seconds_per_call

    calls = []
    slow = lambda item: (calls.append(item), time.sleep(0.02))
    seconds = seconds_per_call(slow, range(100), budget_s=0.05, min_calls=5)
    assert len(seconds) == 5 and calls[:2] == [0, 0]  # the warm-up call, then the first item timed
    assert np.all(seconds >= 0.02)
    assert len(seconds_per_call(lambda item: None, range(30), budget_s=60)) == 30
    repeats = []
    best_of(lambda: (repeats.append(1), time.sleep(0.03)), repeats=3, budget_s=0.01)
    assert len(repeats) == 1  # the first call spent the budget: no repeat


def test_bench_without_word_terms_measures_the_shipped_heads_distilled_terms(tiny_synth, tmp_path):
    """`cir bench --no-word-terms`: the shipped sparse heads without their word terms, at the distilled caps."""
    from cir.bench.context import open_context

    with open_context(tiny_synth, tmp_path / "cache") as context:
        assert context.sparse.words is not None and "distilled" not in context.weights
    with open_context(tiny_synth, tmp_path / "cache", word_terms=False) as context:
        assert context.sparse.words is None and "distilled terms only" in context.weights
        assert (context.sparse.max_query_terms, context.sparse.max_image_terms) == (32, 30)
