"""Stage one's vectors at any gallery size: the model's real vectors first, then vectors drawn to match them.

Dense: the gallery's image embeddings (encoded through the feature cache), then draws from a Gaussian fitted to
them (`DenseStatistics`). Sparse: the sparse image head's output on those embeddings, then draws matching its
non-zero counts, term document frequencies and per-term weights (`SparseStatistics`); without a trained sparse
head, `synthetic_sparse` with the parameters in SYNTHETIC_SPARSE. Queries are the split's first N queries, encoded
by the model (sparse ones by the sparse query head; synthetic too when there is none).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from .vector_stats import DenseStatistics, SparseStatistics, synthetic_sparse
from .context import BenchContext

log = logging.getLogger(__name__)

# Synthetic sparse vectors when no trained sparse head exists: terms per image / per query (Poisson means),
# Zipf exponent of term frequencies; the dense-to-sparse heads keep at most 64 image and 32 query terms.
SYNTHETIC_SPARSE = {"image_terms": 50, "query_terms": 25, "zipf_a": 1.0}


@dataclass
class RealVectors:
    """The model's vectors of the benchmark split: gallery rows in `ids` order, query rows in `queries` order."""

    ids: list[str]
    queries: list[Any]  # cir.types.Query
    dense_gallery: np.ndarray
    dense_queries: np.ndarray
    sparse_gallery: sp.csr_matrix | None = None
    sparse_queries: sp.csr_matrix | None = None
    query_states: Any = None  # cir.stages.dense.QueryStates: stage one's encodings, where stage two starts


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows divided by their norms (cached fp16 embeddings are a rounding away from unit norm)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def encode_real_vectors(context: BenchContext, n_queries: int) -> RealVectors:
    """Encode the split's gallery (through the feature cache) and its first `n_queries` queries."""
    from ..stages.dense import DenseRetriever
    from ..stages.sparse import SparseRetriever

    benchmark = context.benchmark
    queries = benchmark.queries[:n_queries]
    if len(queries) < n_queries:
        log.warning("the benchmark split has %d queries, fewer than the %d asked for", len(queries), n_queries)
    if context.sparse is None:
        retriever = DenseRetriever(context.model, context.cache)
    else:  # its heads may read the tokens as well as the embeddings
        retriever = SparseRetriever(context.model, context.cache, sparse_head=context.sparse)
    features = retriever.encoder.index(benchmark.gallery)
    if context.sparse is None:
        embeddings, states = retriever.encode(queries)
    else:
        sparse_queries, embeddings, states = retriever.query_vectors(queries)
    real = RealVectors(list(features.ids), queries, unit_rows(features["embeddings"]), unit_rows(embeddings),
                       query_states=states)
    if context.sparse is not None:
        real.sparse_gallery, real.sparse_queries = retriever.gallery_vectors(features), sparse_queries
    return real


@dataclass
class ScaledVectors:
    """Gallery vectors of any size for stage one, with the real queries, and how each was made (`sources`)."""

    real: RealVectors
    seed: int = 0
    dense_statistics: DenseStatistics = field(init=False)
    sparse_statistics: SparseStatistics | None = field(init=False)

    def __post_init__(self) -> None:
        self.dense_statistics = DenseStatistics.fit(self.real.dense_gallery)
        gallery = self.real.sparse_gallery
        self.sparse_statistics = SparseStatistics.fit(gallery) if gallery is not None else None

    @property
    def dense_queries(self) -> np.ndarray:
        return self.real.dense_queries

    @cached_property
    def sparse_queries(self) -> sp.csr_matrix:
        if self.real.sparse_queries is not None:
            return self.real.sparse_queries
        return synthetic_sparse(len(self.real.queries), nnz_mean=SYNTHETIC_SPARSE["query_terms"],
                                zipf_a=SYNTHETIC_SPARSE["zipf_a"], seed=self.seed + 1)

    def dense_gallery(self, n: int) -> np.ndarray:
        """`n` unit vectors: the real embeddings (up to n), then draws from the fitted Gaussian."""
        real = self.real.dense_gallery[:n]
        if len(real) == n:
            return np.ascontiguousarray(real)
        return np.concatenate([real, self.dense_statistics.sample(n - len(real), seed=self.seed)])

    def sparse_gallery(self, n: int) -> sp.csr_matrix:
        """`n` sparse rows: the real image vectors (up to n), then matched draws; synthetic without a sparse head."""
        if self.sparse_statistics is None:
            return synthetic_sparse(n, nnz_mean=SYNTHETIC_SPARSE["image_terms"], zipf_a=SYNTHETIC_SPARSE["zipf_a"],
                                    seed=self.seed)
        real = self.real.sparse_gallery[:n]
        if real.shape[0] == n:
            return real
        return sp.vstack([real, self.sparse_statistics.sample(n - real.shape[0], seed=self.seed)], format="csr")

    def sources(self) -> dict[str, Any]:
        """How the vectors were made, in words and numbers, for the report."""
        real_rows = len(self.real.dense_gallery)
        dense = {"real_rows": real_rows, "beyond": self.dense_statistics.describe(),
                 "text": f"the first {real_rows:,} gallery rows (every row at sizes up to that) are the model's image "
                         "embeddings; beyond them, draws "
                         f"from a Gaussian fitted to those embeddings (mean + rank-{self.dense_statistics.rank} "
                         "principal directions + diagonal residual), L2-normalised",
                 "queries": f"{len(self.real.queries)} real query embeddings"}
        if self.sparse_statistics is None:
            sparse = {"real_rows": 0, "synthetic": SYNTHETIC_SPARSE,
                      "text": "no trained sparse head: synthetic_sparse vectors (Poisson({image_terms}) terms per image, "
                              "Poisson({query_terms}) per query, Zipf exponent {zipf_a} over 30,522 terms, weights "
                              "log(1 + Exp(mean 2)))".format(**SYNTHETIC_SPARSE),
                      "queries": f"{len(self.real.queries)} synthetic query vectors"}
        else:
            sparse = {"real_rows": real_rows, "beyond": self.sparse_statistics.describe(),
                      "text": f"the first {real_rows:,} gallery rows are the sparse image head's vectors of those "
                              "embeddings; beyond them, draws matching their non-zero counts, term document "
                              "frequencies and per-term weights",
                      "queries": f"{len(self.real.queries)} real sparse query vectors (sparse query head)"}
        return {"dense": dense, "sparse": sparse}
