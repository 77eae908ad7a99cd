"""Stage one at each gallery size: exact and approximate dense (FAISS flat / IVF / HNSW) and sparse (CSR, CSR in two
passes, Seismic) indexes, each built and searched on the same vectors, against the exact index of its family.

Per index: build seconds, bytes, one query at a time on one thread (p50 / p95 ms, queries per second), all queries
in one call on `threads` threads (the best of a few calls), recall@k against the exact index (dense approximations
vs flat, two-pass and Seismic vs CSR; near-ties within float16 rounding count as found), and the ratios to exact dense search at
the same size. Each approximate index also gets its operating point: the cheapest setting of its search parameter
(nprobe, ef_search, rescored, query_cut / heap_factor, Milvus's nprobe / ef) at recall@k >= 0.99 of exact search,
with the latency and throughput there, so that indexes compare at equal recall.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import faiss
import numpy as np
import scipy.sparse as sp

from ..errors import CirError
from ..index.dense_faiss import DenseIndex, _default_params
from ..index.sparse import SparseIndex
from ..index.sparse_csr import InvertedBlocks
from ..index.sparse import expected_flops
from ..machine import peak_rss_bytes
from .timing import best_of, latency_summary, seconds_per_call, thread_limit, timed
from .vectors import ScaledVectors

SEISMIC_MISSING = "not installed: pip install 'cir[seismic]'"
_TIE_TOLERANCE = 2e-3  # relative: float16 index weights may reorder near-ties
BATCH_REPEATS = 3
# Seconds one row may spend on its one-query latencies (at least 10 queries timed) and on repeating its batched call:
# milvus-lite's sparse search at 1M images takes seconds a query, and is sampled rather than timed for an hour.
TIMING_BUDGET_S = 60.0


# The csr backend's two-pass search as benched: the 8 largest query terms pick 300 images, rescored exactly.
TWO_PASS = {"first_terms": 8, "rescored": 300}


@dataclass(frozen=True)
class Method:
    """One stage-one index: its family (dense or sparse), its kind (the name --skip takes), whether it is exact,
    and the index kind or sparse backend built (default: the kind) with its settings."""

    name: str
    family: str
    kind: str
    exact: bool
    index: str = ""
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def index_kind(self) -> str:
        return self.index or self.kind


METHODS = (
    Method("dense flat", "dense", "flat", True),
    Method("dense ivf", "dense", "ivf", False),
    Method("dense hnsw", "dense", "hnsw", False),
    Method("dense milvus flat", "dense", "milvus-flat", False, index="milvus", settings=(("index_type", "FLAT"),)),
    Method("dense milvus ivf", "dense", "milvus-ivf", False, index="milvus", settings=(("index_type", "IVF_FLAT"),)),
    Method("dense milvus hnsw", "dense", "milvus-hnsw", False, index="milvus",
           settings=(("index_type", "HNSW"), ("params", (("M", 32), ("efConstruction", 200))))),
    Method("sparse csr", "sparse", "csr", True),
    Method("sparse csr two-pass", "sparse", "two-pass", False, index="csr", settings=tuple(TWO_PASS.items())),
    Method("sparse seismic", "sparse", "seismic", False),
    Method("sparse milvus", "sparse", "milvus-sparse", False, index="milvus"),
)
MILVUS_MISSING = "not installed: pip install 'cir[milvus]'"
TARGET_RECALL = 0.99  # the operating point: the cheapest search setting reaching this recall@k of exact search

# Each approximate index's search parameter, swept cheapest first for the operating point. Milvus FLAT and its sparse
# inverted index search exactly: no parameter to sweep.
SWEEPS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "ivf": ("nprobe", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
    "hnsw": ("ef_search", (16, 32, 64, 128, 256, 512, 1024, 2048)),
    "two-pass": ("rescored", (50, 100, 200, 300, 500, 1000, 2000, 5000)),
    "seismic": ("query_cut/heap_factor", ((10, 0.9), (20, 0.9), (40, 0.9), (40, 0.8), (60, 0.7), (80, 0.6))),
    "milvus-ivf": ("nprobe", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
    "milvus-hnsw": ("ef", (16, 32, 64, 128, 256, 512, 1024, 2048)),
}
BASELINE = METHODS[0].name


def seismic_available() -> bool:
    return importlib.util.find_spec("seismic") is not None


def milvus_available() -> bool:
    return importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None


def _settings_dict(settings: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: _settings_dict(v) if isinstance(v, tuple) and v and isinstance(v[0], tuple) else v for k, v in settings}


def _build_milvus(method: Method, gallery: Any, ids: list[str], folder: str) -> Any:
    """A milvus-lite collection of the gallery in `folder` (build time includes the inserts)."""
    from ..index.milvus import GalleryVectors, MilvusIndex, MilvusSettings

    vectors = GalleryVectors(ids, sparse=gallery) if sp.issparse(gallery) else GalleryVectors(ids, dense=gallery)
    params = _settings_dict(method.settings)
    if params.get("index_type") == "IVF_FLAT":  # as many cells as the FAISS ivf row
        params["params"] = {"nlist": _default_params("ivf", len(ids))["nlist"]}
    settings = MilvusSettings.parse({"uri": f"{folder}/bench.db", "collection": "bench", "batch_size": 5000,
                                     **params})
    return MilvusIndex.sync(vectors, settings, {"encoder": "cir-bench"}, "bench")


def _build(method: Method, gallery: Any, ids: list[str], threads: int, folder: str = "") -> Any:
    if method.index == "milvus":
        return _build_milvus(method, gallery, ids, folder)
    if method.family == "dense":
        return DenseIndex.build(gallery, ids, kind=method.index_kind, device="cpu")  # threads: set around each call
    return SparseIndex.build(gallery, ids, backend=method.index_kind, threads=threads, **dict(method.settings))


def _index_params(index: Any) -> dict[str, Any]:
    return dict(index.backend.params) if isinstance(index, SparseIndex) else dict(index.params)


def _set_search_parameter(index: Any, kind: str, value: Any) -> Callable[[Any, int], Any]:
    """Set `kind`'s swept search parameter to `value`; return the search call to time (queries, k)."""
    if kind == "ivf":
        index.index.nprobe = min(int(value), index.index.nlist)
    elif kind == "hnsw":
        index.index.hnsw.efSearch = int(value)
    elif kind == "two-pass":
        index.backend.rescored = int(value)
    elif kind == "seismic":
        index.backend.config["query_cut"], index.backend.config["heap_factor"] = value
    elif kind in ("milvus-ivf", "milvus-hnsw"):
        name = "nprobe" if kind == "milvus-ivf" else "ef"
        return lambda queries, k: index.search(queries, k, search_params={name: max(int(value), k)
                                                                         if name == "ef" else int(value)})
    return index.search


def operating_point(index: Any, method: Method, queries: Any, k: int, kth: np.ndarray,
                    true_scores: Callable[[int, np.ndarray], np.ndarray], threads: int) -> dict[str, Any]:
    """The cheapest setting of the method's search parameter reaching TARGET_RECALL recall@k of exact search, with
    its one-query latency and batched throughput; the sweep's points too (value, recall)."""
    if method.kind not in SWEEPS:
        return {"op_param": None, "op_note": "exact search (no parameter)"}
    name, values = SWEEPS[method.kind]
    points = []
    for value in values:
        search = _set_search_parameter(index, method.kind, value)
        with thread_limit(threads):
            _, found = search(queries, k)
        recall = recall_at_k(found, kth, true_scores, k)
        points.append([value, recall])
        if recall >= TARGET_RECALL:
            with thread_limit(1):
                single = seconds_per_call(lambda q: search(queries[q : q + 1], k), range(queries.shape[0]),
                                          budget_s=TIMING_BUDGET_S)
            with thread_limit(threads):
                batch_s, _ = best_of(lambda: search(queries, k), BATCH_REPEATS, TIMING_BUDGET_S)
            return {"op_param": name, "op_value": value, "op_recall": recall, "op_sweep": points,
                    **latency_summary(single, "op_single_"), "op_batch_qps": queries.shape[0] / batch_s}
    best = max(points, key=lambda p: p[1])
    return {"op_param": name, "op_value": None, "op_recall": best[1], "op_sweep": points,
            "op_note": f"recall@{k} {TARGET_RECALL} not reached (best {best[1]:.3f} at {name}={best[0]})"}


def _batch_seconds(index: DenseIndex | SparseIndex, queries: Any, k: int) -> tuple[float, str, list[list[str]], np.ndarray]:
    """Seconds to search all queries in one call (best of BATCH_REPEATS); FAISS flat is timed on its own scan and
    on BLAS, the faster kept."""
    seconds, (scores, found) = best_of(lambda: index.search(queries, k), BATCH_REPEATS, TIMING_BUDGET_S)
    path = "default"
    if isinstance(index, DenseIndex) and index.kind == "flat":
        threshold = faiss.cvar.distance_compute_blas_threshold
        below = len(queries) < threshold
        faiss.cvar.distance_compute_blas_threshold = 1 if below else len(queries) + 1
        try:
            other, _ = best_of(lambda: index.search(queries, k), BATCH_REPEATS, TIMING_BUDGET_S)
        finally:
            faiss.cvar.distance_compute_blas_threshold = threshold
        if other < seconds:
            seconds, path = other, "blas" if below else "scan"
        else:
            path = "scan" if below else "blas"
    return seconds, path, found, scores


def recall_at_k(found: list[list[str]], kth_scores: np.ndarray, true_scores: Callable[[int, np.ndarray], np.ndarray], k: int) -> float:
    """Mean share of each query's k results scoring at least the exact k-th score (ids are gallery row numbers)."""
    hits = []
    for query, ids in enumerate(found):
        rows = np.fromiter((int(i) for i in ids), dtype=np.int64, count=len(ids))
        scores = true_scores(query, rows)
        floor = kth_scores[query] - _TIE_TOLERANCE * max(abs(float(kth_scores[query])), 1e-6)
        hits.append(min(k, int((scores >= floor).sum())) / k)
    return float(np.mean(hits))


def _true_scores(gallery: Any, queries: Any) -> Callable[[int, np.ndarray], np.ndarray]:
    if sp.issparse(gallery):
        return lambda q, rows: (queries[q] @ gallery[rows].T).toarray().ravel()
    return lambda q, rows: gallery[rows] @ queries[q]


def measure(method: Method, gallery: Any, queries: Any, k: int, threads: int, folder: str = "") -> tuple[dict[str, Any], list[list[str]], np.ndarray, Any]:
    """Build `method` on `gallery` and time its searches: the report row, the batched results, their scores and
    the index (Milvus collections live in `folder`)."""
    n = gallery.shape[0]
    ids = [str(i) for i in range(n)]
    with thread_limit(threads):
        build_s, index = timed(lambda: _build(method, gallery, ids, threads, folder))
    with thread_limit(1):
        single = seconds_per_call(lambda q: index.search(queries[q : q + 1], k), range(queries.shape[0]),
                                  budget_s=TIMING_BUDGET_S)
    with thread_limit(threads):
        batch_s, path, found, scores = _batch_seconds(index, queries, k)
    row = {"method": method.name, "family": method.family, "kind": method.index_kind, "exact": method.exact, "status": "ok",
           "images": n, "build_s": build_s, "index_bytes": int(index.nbytes), **latency_summary(single, "single_"),
           "single_queries_timed": len(single),
           "batch_qps": queries.shape[0] / batch_s, "batch_ms_per_query": 1000 * batch_s / queries.shape[0],
           "batch_path": path, "params": _index_params(index)}
    if method.index == "milvus":
        row["index_bytes_what"] = "milvus-lite database folder on disk"
    if method.family == "sparse":
        row["flops_per_pair"] = _sparse_flops(queries, gallery, index)
        row["terms_per_image"] = gallery.nnz / n
    else:
        row["flops_per_pair"] = float(gallery.shape[1])
    return row, found, scores, index


def _sparse_flops(queries: sp.csr_matrix, gallery: sp.csr_matrix, index: SparseIndex) -> float:
    """Expected multiply-adds per query-image pair: over the posting lists of the query terms a search walks (all, or
    a two-pass search's first terms), plus a two-pass search's lookups of the other terms for its rescored images
    (each a binary search, counted as one)."""
    params = index.backend.params if isinstance(index, SparseIndex) else {}
    first = params.get("first_terms", 0)
    if not first:
        return expected_flops(queries, gallery)
    kept = queries.tolil()
    lookups = 0
    for row, (terms, values) in enumerate(zip(kept.rows, kept.data)):
        if len(terms) <= first:
            continue
        order = sorted(InvertedBlocks.first_pass_terms(np.asarray(values), first))
        lookups += (len(terms) - first) * min(params["rescored"], gallery.shape[0])
        kept.rows[row], kept.data[row] = [terms[i] for i in order], [values[i] for i in order]
    return expected_flops(kept.tocsr(), gallery) + lookups / queries.shape[0] / gallery.shape[0]


def _not_measured(method: Method, n: int, why: str) -> dict[str, Any]:
    return {"method": method.name, "family": method.family, "kind": method.index_kind, "exact": method.exact, "images": n,
            "status": why}


def bench_scale(vectors: ScaledVectors, n: int, k: int, threads: int, skip: frozenset[str] = frozenset()) -> Iterator[dict[str, Any]]:
    """Rows of every method at gallery size `n`, each family's exact index first; approximate kinds in `skip`
    get a row saying so."""
    families = {"dense": (vectors.dense_gallery(n), vectors.dense_queries),
                "sparse": (vectors.sparse_gallery(n), vectors.sparse_queries)}
    reference: dict[str, tuple[str, np.ndarray]] = {}
    for method in METHODS:
        if method.kind in skip and not method.exact:
            yield _not_measured(method, n, f"skipped (--skip {method.kind})")
            continue
        if method.index == "milvus" and "milvus" in skip:
            yield _not_measured(method, n, "skipped (--skip milvus)")
            continue
        if method.kind == "seismic" and not seismic_available():
            yield _not_measured(method, n, SEISMIC_MISSING)
            continue
        if method.index == "milvus" and not milvus_available():
            yield _not_measured(method, n, MILVUS_MISSING)
            continue
        gallery, queries = families[method.family]
        with tempfile.TemporaryDirectory(prefix="cir-bench-milvus-") as folder:
            try:
                row, found, scores, index = measure(method, gallery, queries, k, threads, folder)
            except CirError as exc:  # a database that fails one row (a call timing out) must not lose the others
                if method.index != "milvus":
                    raise
                from ..index.milvus import close_clients

                close_clients()
                yield _not_measured(method, n, f"failed: {exc}")
                continue
            if method.exact:
                reference[method.family] = (method.name, scores[:, min(k, n) - 1])
                row["recall"], row["recall_against"] = 1.0, method.name
            else:
                against, kth = reference[method.family]
                true_scores = _true_scores(gallery, queries)
                row["recall"] = recall_at_k(found, kth, true_scores, min(k, n))
                row["recall_against"] = against
                row.update(operating_point(index, method, queries, min(k, n), kth, true_scores, threads))
            if method.index == "milvus":
                index.drop()
                from ..index.milvus import close_clients

                close_clients()
        row["peak_rss_bytes"] = peak_rss_bytes()
        yield row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed-ups (queries per second) and size ratios against exact dense search at the same gallery size."""
    baselines = {r["images"]: r for r in rows if r["method"] == BASELINE and r["status"] == "ok"}
    for row in rows:
        base = baselines.get(row["images"])
        if base is None or row["status"] != "ok":
            continue
        row["speedup_single"] = row["single_qps"] / base["single_qps"]
        row["speedup_batch"] = row["batch_qps"] / base["batch_qps"]
        row["size_ratio"] = row["index_bytes"] / base["index_bytes"]
