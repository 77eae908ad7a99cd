"""Hybrid stage one: one Milvus collection holding each image's dense and sparse vectors, searched on both fields and
fused by Milvus's own hybrid search (weighted scores or reciprocal rank fusion)."""

from __future__ import annotations

from typing import Sequence

from ..cache import FeatureCache
from ..errors import CirError
from ..types import Gallery, Query, Ranking, Run
from .encoding import module_fingerprint
from .sparse import SparseRetriever
from .sparse_head import SparseEncoder


class HybridRetriever(SparseRetriever):
    """Dense and sparse stage one at once, fused inside Milvus.

    Settings (`stage_one` of a config): `index` (milvus, the only backend with hybrid search), `index_params`
    (cir.index.milvus.MilvusSettings: uri, token, collection, index types and parameters, ...), `fusion`
    (weighted | rrf), `fusion_weights` ([dense, sparse] for weighted; default [0.5, 0.5]), `rrf_k` (default 60),
    `candidates` (results each field contributes before fusion; default k), `sparse_head`, `word_terms`, `batch_size`.
    """

    name = "hybrid"

    def __init__(
        self,
        model,
        cache: FeatureCache | None = None,
        sparse_head: str | SparseEncoder | None = None,
        index: str = "milvus",
        index_params: dict | None = None,
        fusion: str = "weighted",
        fusion_weights: Sequence[float] = (0.5, 0.5),
        rrf_k: int = 60,
        candidates: int | None = None,
        batch_size: int = 64,
        max_results: int | None = None,
        word_terms: bool = True,
    ) -> None:
        if index != "milvus":
            raise CirError(f"hybrid stage one: index {index!r} has no hybrid search; use index: milvus")
        from ..index.milvus import fusion_ranker

        fusion_ranker(fusion, fusion_weights, rrf_k)  # refuse bad settings before any work
        if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1):
            raise CirError(f"hybrid stage one: candidates must be a whole number >= 1, got {candidates!r}")
        super().__init__(model, cache, sparse_head, index, index_params, batch_size, max_results, word_terms)
        self.fusion = fusion
        self.fusion_weights = tuple(fusion_weights)
        self.rrf_k = rrf_k
        self.candidates = candidates

    def describe(self) -> str:
        how = f"rrf k={self.rrf_k}" if self.fusion == "rrf" else f"weighted {list(self.fusion_weights)}"
        return f"{self.name}, milvus, {how}"

    def index(self, gallery: Gallery) -> None:
        features = self.encoder.index(gallery)
        dense = self.dense_vectors(features)
        self.image_vectors = self.gallery_vectors(features)
        self._sparse_index = self.milvus_index(gallery, features.ids, dense=dense, sparse=self.image_vectors,
                                               sparse_head=module_fingerprint(self.sparse))

    def search(self, queries: Sequence[Query], k: int) -> Run:
        index = self._indexed()
        vectors, embeddings, states = self.query_vectors(queries)
        scores, ids = index.hybrid_search(
            embeddings, vectors, k, self.fusion, self.fusion_weights, self.rrf_k,
            self.candidates)
        rankings = (Ranking(q.id, list(i), s[: len(i)].tolist()) for q, s, i in zip(queries, scores, ids))
        return Run(rankings, query_states=states)
