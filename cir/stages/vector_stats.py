"""Synthetic gallery vectors, sparse-vector statistics and the stage-one speed benchmark (sparse vs dense).

The synthetic sparse vectors imitate learned sparse retrieval output: each row has about `nnz_mean` distinct terms
drawn from a Zipf-like distribution over the vocabulary (a few very common terms, a long tail) with positive weights
shaped like `log(1 + relu(x))`. Real vectors differ, so measured speeds are indicative, not promises.

Run the benchmark with `python -m cir.stages.vector_stats --help`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any, Callable

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ..errors import CirError

log = logging.getLogger(__name__)

BERT_VOCAB_SIZE = 30_522
_ROWS_PER_CHUNK = 50_000


def zipf_term_probabilities(vocab: int, zipf_a: float, seed: int = 0) -> np.ndarray:
    """P(term) proportional to rank**-zipf_a, with ranks shuffled over term ids so frequency is not id order."""
    weights = np.arange(1, vocab + 1, dtype=np.float64) ** -zipf_a
    weights /= weights.sum()
    return weights[np.random.default_rng(seed).permutation(vocab)]


class _TermSampler:
    """Draws term ids from a discrete distribution fast: a guide table jumps near the answer of the inverse CDF."""

    def __init__(self, probabilities: np.ndarray, bins: int = 1 << 18) -> None:
        self.cdf = np.cumsum(probabilities)
        self.cdf[-1] = 1.0  # uniform draws lie below 1, so every draw finds a term
        self.guide = np.searchsorted(self.cdf, np.arange(bins) / bins, side="right").astype(np.int32)

    def __call__(self, uniform: np.ndarray) -> np.ndarray:
        """The smallest term t with cdf[t] > u, for each u in `uniform`."""
        terms = self.guide[(uniform * len(self.guide)).astype(np.int64)]
        pending = np.flatnonzero(self.cdf[terms] <= uniform)
        while pending.size:  # a guide bin spans few term boundaries, so this loop runs a few times
            terms.flat[pending] += 1
            pending = pending[self.cdf[terms.flat[pending]] <= uniform.flat[pending]]
        return terms


def _sample_distinct_terms(
    counts: np.ndarray, sampler: _TermSampler, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw terms for each row until it holds `counts[row]` distinct ones (successive sampling).

    Returns (row, term) pairs. Over-draws, keeps each term's first draw in its row, then the first `count` of those;
    a row whose over-draw holds too few distinct terms keeps what it has.
    """
    n_rows = len(counts)
    draws_per_row = int(2 * counts.max() + 16)
    terms = sampler(rng.random((n_rows, draws_per_row)))
    # Sort each row by (term, draw position): a term's first draw is where the term changes.
    ordered = np.sort(terms * draws_per_row + np.arange(draws_per_row, dtype=np.int32), axis=1)
    ordered_terms = ordered // draws_per_row
    is_first = np.ones(ordered.shape, dtype=bool)
    is_first[:, 1:] = ordered_terms[:, 1:] != ordered_terms[:, :-1]
    first_positions = (ordered - ordered_terms * draws_per_row + (np.arange(n_rows) * draws_per_row)[:, None])[is_first]
    first = np.zeros(terms.shape, dtype=bool)
    first.flat[first_positions] = True
    keep = first & (np.cumsum(first, axis=1) <= counts[:, None])
    return np.nonzero(keep)[0], terms[keep]


def synthetic_sparse(
    n: int,
    vocab: int = BERT_VOCAB_SIZE,
    nnz_mean: float = 50,
    zipf_a: float = 1.0,
    seed: int = 0,
    term_seed: int = 0,
) -> sp.csr_matrix:
    """`n` random sparse vectors (float32 CSR, n x vocab) with about `nnz_mean` distinct Zipf-distributed terms each.

    `term_seed` fixes which term ids are frequent, so galleries and queries drawn with different `seed`s share
    their frequent terms, as real queries and documents do.
    """
    sampler = _TermSampler(zipf_term_probabilities(vocab, zipf_a, term_seed))
    rng = np.random.default_rng(seed)
    counts = rng.poisson(nnz_mean, n).clip(1, vocab)
    blocks = []
    for start in tqdm(range(0, n, _ROWS_PER_CHUNK), desc="synthetic sparse vectors", unit="chunk", disable=n <= _ROWS_PER_CHUNK):
        rows, terms = _sample_distinct_terms(counts[start : start + _ROWS_PER_CHUNK], sampler, rng)
        weights = np.log1p(rng.exponential(2.0, rows.size)).astype(np.float32)
        shape = (min(_ROWS_PER_CHUNK, n - start), vocab)
        blocks.append(sp.csr_matrix((weights, (rows, terms)), shape=shape))
    matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, vocab), dtype=np.float32)
    matrix.sort_indices()
    return matrix


def synthetic_dense(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    """`n` random L2-normalised float32 vectors of size `dim`."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _term_rates(matrix: sp.spmatrix) -> np.ndarray:
    """The fraction of rows holding each term (non-zero weight)."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    return np.bincount(matrix.indices[matrix.data != 0], minlength=matrix.shape[1]) / max(1, matrix.shape[0])


def expected_flops(query_matrix: sp.spmatrix, doc_matrix: sp.spmatrix) -> float:
    """Expected multiply-adds per query-image pair of a sparse inner product: sum over terms of p_q(t) * p_d(t).

    p_q(t) and p_d(t) are the fractions of queries and of images holding term t (the FLOPs measure of learned
    sparse retrieval, Paria et al. 2020, which SPLADE-style training regularises). Times the gallery size, it is
    the work an exact inverted index does per query; a dense index does `dim` per pair.
    """
    if query_matrix.shape[1] != doc_matrix.shape[1]:
        raise CirError(f"queries have {query_matrix.shape[1]} terms but the images {doc_matrix.shape[1]}")
    return float(_term_rates(query_matrix) @ _term_rates(doc_matrix))


def _ms_per_query(search: Callable[[], object], n_queries: int) -> float:
    start = time.perf_counter()
    search()
    return (time.perf_counter() - start) * 1000 / n_queries


def _one_at_a_time(search: Callable[[object, int], object], queries: object, n: int, k: int) -> Callable[[], None]:
    return lambda: [search(queries[i : i + 1], k) for i in range(n)]


def benchmark_stage_one(
    images: int = 1_000_000,
    queries: int = 200,
    single_queries: int = 20,
    k: int = 100,
    dim: int = 256,
    vocab: int = BERT_VOCAB_SIZE,
    image_terms: float = 50,
    query_terms: float = 25,
    zipf_a: float = 1.0,
    threads: int = 1,
    seed: int = 0,
    sparse_backend: str = "csr",
    sparse_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time sparse search (SparseIndex, exact `csr` by default) against exact dense search (DenseIndex, flat).

    Milliseconds per query one query at a time (`single_queries` calls) and for a batch of `queries` in one call,
    with `threads` threads for both; index sizes in bytes; the sparse results' recall@k against exact products. For batches, FAISS uses its
    own scan below `distance_compute_blas_threshold` queries and BLAS above: both paths are timed.
    """
    from .dense_index import DenseIndex
    from .sparse_index import SparseIndex

    threads_before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    ids = [str(i) for i in range(images)]
    report: dict[str, Any] = {"images": images, "queries": queries, "k": k, "dim": dim, "threads": threads, "zipf_a": zipf_a,
                              "sparse_backend": sparse_backend, "sparse_params": {"threads": threads, **(sparse_params or {})}}
    try:
        gallery = synthetic_sparse(images, vocab, image_terms, zipf_a, seed=seed)
        sparse_queries = synthetic_sparse(queries, vocab, query_terms, zipf_a, seed=seed + 1)
        report["expected_flops"] = expected_flops(sparse_queries, gallery)
        report["image_terms_mean"] = gallery.nnz / images
        report["query_terms_mean"] = sparse_queries.nnz / queries
        start = time.perf_counter()
        sparse_index = SparseIndex.build(gallery, ids, backend=sparse_backend, **report["sparse_params"])
        report["sparse_build_s"] = time.perf_counter() - start
        report["sparse_bytes"] = sparse_index.nbytes
        log.info("sparse index built: %d non-zeros, %.0f MB", sparse_index.nnz, sparse_index.nbytes / 1e6)
        report["sparse_single_ms"] = _ms_per_query(_one_at_a_time(sparse_index.search, sparse_queries, single_queries, k), single_queries)
        report["sparse_batch_ms"] = _ms_per_query(lambda: sparse_index.search(sparse_queries, k), queries)
        report["sparse_recall"] = _recall(sparse_index.search(sparse_queries, k)[1], gallery, sparse_queries, k, ids)
        del sparse_index, gallery

        dense_queries = synthetic_dense(queries, dim, seed=seed + 1)
        start = time.perf_counter()
        dense_index = DenseIndex.build(synthetic_dense(images, dim, seed=seed), ids, threads=threads)
        report["dense_build_s"] = time.perf_counter() - start
        report["dense_bytes"] = dense_index.nbytes
        report["dense_single_ms"] = _ms_per_query(_one_at_a_time(dense_index.search, dense_queries, single_queries, k), single_queries)
        report["dense_batch_ms"] = _ms_per_query(lambda: dense_index.search(dense_queries, k), queries)
        blas_threshold = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1
        try:
            report["dense_batch_blas_ms"] = _ms_per_query(lambda: dense_index.search(dense_queries, k), queries)
        finally:
            faiss.cvar.distance_compute_blas_threshold = blas_threshold
    finally:
        faiss.omp_set_num_threads(threads_before)
    report["speedup_single"] = report["dense_single_ms"] / report["sparse_single_ms"]
    report["speedup_batch"] = min(report["dense_batch_ms"], report["dense_batch_blas_ms"]) / report["sparse_batch_ms"]
    report["size_ratio"] = report["dense_bytes"] / report["sparse_bytes"]
    return report


def _recall(found: list[list[str]], gallery: sp.csr_matrix, queries: sp.csr_matrix, k: int, ids: list[str]) -> float:
    """Recall@k of sparse results against exact top k (float32 products, ties at the k-th score count as found)."""
    hits = []
    for row, found_ids in enumerate(found):
        scores = (queries[row] @ gallery.T).toarray().ravel()
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        tolerance = 1e-3 * max(abs(kth), 1e-6)  # float16 storage may reorder near-ties
        wanted = set(np.flatnonzero(scores >= kth - tolerance).tolist())
        hits.append(min(k, sum(int(i) in wanted for i in found_ids)) / k)
    return float(np.mean(hits))


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    from ..cli.console import console

    table = Table(title=f"Stage-one speed: {report['images']:,} images, k={report['k']}, {report['threads']} thread(s)")
    table.add_column("measure")
    table.add_column(f"sparse ({report['sparse_backend']}, recall@k {report['sparse_recall']:.3f})", justify="right")
    table.add_column("dense (faiss flat, exact)", justify="right")
    table.add_column("dense / sparse", justify="right")
    table.add_row("ms per query, one at a time", f"{report['sparse_single_ms']:.1f}", f"{report['dense_single_ms']:.1f}",
                  f"{report['speedup_single']:.1f}x")
    table.add_row(f"ms per query, batch of {report['queries']}", f"{report['sparse_batch_ms']:.1f}",
                  f"{report['dense_batch_ms']:.1f} (BLAS path {report['dense_batch_blas_ms']:.1f})", f"{report['speedup_batch']:.1f}x")
    table.add_row("index size (MB)", f"{report['sparse_bytes'] / 1e6:.0f}", f"{report['dense_bytes'] / 1e6:.0f}",
                  f"{report['size_ratio']:.1f}x")
    table.add_row("build (s)", f"{report['sparse_build_s']:.1f}", f"{report['dense_build_s']:.1f}", "")
    table.add_row("work per query-image pair", f"{report['expected_flops']:.2f} FLOPs", f"{report['dim']} FLOPs", "")
    console.print(table)
    console.print(f"terms per image {report['image_terms_mean']:.1f}, per query {report['query_terms_mean']:.1f}, "
                  f"Zipf exponent {report['zipf_a']}; the batch ratio uses the faster dense path")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cir.stages.vector_stats", description=benchmark_stage_one.__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="queries in the batched measurement")
    parser.add_argument("--single-queries", type=int, default=20, help="queries searched one at a time")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--image-terms", type=float, default=50)
    parser.add_argument("--query-terms", type=float, default=25)
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of term frequencies")
    parser.add_argument("--threads", type=int, default=1, help="search threads, sparse and dense")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="csr", help="sparse backend: csr (exact) or seismic (approximate)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a sparse backend setting (repeatable)")
    args = parser.parse_args(argv)
    params = {name: json.loads(value) for name, _, value in (p.partition("=") for p in args.param)}
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _print_report(benchmark_stage_one(
        images=args.images, queries=args.queries, single_queries=args.single_queries, k=args.k, dim=args.dim,
        image_terms=args.image_terms, query_terms=args.query_terms, zipf_a=args.zipf, threads=args.threads, seed=args.seed,
        sparse_backend=args.backend, sparse_params=params,
    ))


if __name__ == "__main__":
    main()
