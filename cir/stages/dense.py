"""Dense stage one: the image-grounded text encoding of a query matched against image embeddings with FAISS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..cache import FeatureCache
from ..errors import CirError
from ..pipeline import Retriever
from ..types import Gallery, Query, Ranking, Run
from ..index.dense_faiss import DenseIndex
from .encoding import TowerEncoder, batches, progress


@dataclass
class EncodedQueries:
    """Stage one's view of a batch of queries: the embedding and the token sequence z_t stage two starts from."""

    embeddings: torch.Tensor  # (B, D), unit norm
    fused: torch.Tensor  # (B, L, H), z_t
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)

    def row(self, i: int) -> "EncodedQueries":
        """Query i alone, its right padding trimmed (what encoding it alone would give, up to rounding)."""
        n = int(self.attention_mask[i].sum())
        return EncodedQueries(
            self.embeddings[i : i + 1], self.fused[i : i + 1, :n], self.input_ids[i : i + 1, :n],
            self.attention_mask[i : i + 1, :n],
        )


@dataclass
class QueryStates:
    """Stage one's encodings of a run's queries, by (reference, text), kept with the Run so that a stage two on the
    same stage-one weights and precision starts from them instead of encoding every query again."""

    stage1: torch.nn.Module  # the stage-one model that produced them
    bf16: bool
    by_query: dict[tuple[str, str], EncodedQueries] = field(default_factory=dict)

    def get(self, query: Query) -> EncodedQueries | None:
        return self.by_query.get((query.reference, query.text))


def encode_queries(model, ref_tokens: torch.Tensor, texts: Sequence[str]) -> EncodedQueries:
    """Tokenise "[ENC] text", let it cross-attend the reference tokens, project and normalise token 0."""
    input_ids, attention_mask = model.tokenizer(list(texts))
    input_ids = input_ids.to(ref_tokens.device)
    attention_mask = attention_mask.to(ref_tokens.device)
    fused = model.stage1.fuse(ref_tokens, input_ids, attention_mask)
    return EncodedQueries(model.stage1.query_embedding(fused), fused, input_ids, attention_mask)


MILVUS_MAX_RESULTS = 16_384  # a Milvus server returns at most this many results per search


class DenseRetriever(Retriever):
    """FAISS inner-product search over cached, L2-normalised gallery embeddings.

    Settings (`stage_one` of a config): `index` (flat | ivf | hnsw | milvus), `index_params` (the FAISS index's own,
    e.g. nlist, nprobe, M, ef_search, device; for milvus, cir.index.milvus.MilvusSettings), `batch_size` (gallery images and queries per encoder batch),
    `max_results` (the most results one search returns; e.g. a Milvus server's 16,384, or a bound for evaluation).
    """

    name = "dense"

    def __init__(
        self,
        model,
        cache: FeatureCache | None = None,
        index: str = "flat",
        index_params: dict | None = None,
        batch_size: int = 64,
        max_results: int | None = None,
    ) -> None:
        self.model = model
        self.encoder = TowerEncoder(model, "stage1", cache, batch_size)
        self.index_kind = index
        self.index_params = index_params or {}
        self.batch_size = batch_size
        if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 2):
            raise CirError(f"{self.name} stage one: max_results must be a whole number >= 2, got {max_results!r}")
        if index == "milvus" and max_results is None:
            max_results = MILVUS_MAX_RESULTS
        self.max_results = max_results
        self._index: DenseIndex | None = None

    @property
    def images_encoded(self) -> int | None:
        return None if self.encoder.features is None else self.encoder.features.encoded

    def describe(self) -> str:
        return f"{self.name}, {self.index_kind}"

    def index(self, gallery: Gallery) -> None:
        features = self.encoder.index(gallery)
        vectors = self.dense_vectors(features)
        if self.index_kind == "milvus":
            self._index = self.milvus_index(gallery, features.ids, dense=vectors)
        else:
            self._index = DenseIndex.build(vectors, features.ids, kind=self.index_kind, **self.index_params)

    @staticmethod
    def dense_vectors(features) -> np.ndarray:
        """The gallery's float32 embeddings from the cached features."""
        return np.asarray(features["embeddings"], dtype=np.float32)

    def milvus_index(self, gallery: Gallery, ids: Sequence[str], dense=None, sparse=None, sparse_head: str = ""):
        """The gallery's Milvus collection (`index: milvus`), ingested from the cached features as needed."""
        from ..index.milvus import GalleryVectors, for_gallery

        return for_gallery(GalleryVectors(list(ids), dense, sparse), gallery, self.index_params,
                           self.encoder.cache.root if self.encoder.cache is not None else None, self.encoder.key,
                           "bf16" if self.encoder.autocast_bf16 else "fp32", sparse_head)

    def embed(self, queries: Sequence[Query]) -> np.ndarray:
        """(B, D) unit-norm query embeddings."""
        return self.encode(queries)[0]

    @torch.inference_mode()
    def encode(self, queries: Sequence[Query], each_batch=None) -> tuple[np.ndarray, QueryStates]:
        """Query embeddings, and the encodings behind them for stage two; `each_batch(reference_tokens, encoded)`
        sees every batch on the way (what a sparse head reads besides the embeddings)."""
        out = []
        states = QueryStates(self.model.stage1, self.encoder.autocast_bf16)
        for batch in progress(batches(queries, self.batch_size), len(queries), self.batch_size, "stage one"):
            with self.encoder.autocast():
                ref = self.encoder.tokens([q.reference for q in batch])
                encoded = encode_queries(self.model, ref, [q.text for q in batch])
            if each_batch is not None:
                each_batch(ref, encoded)
            out.append(encoded.embeddings.float().cpu().numpy())
            states.by_query.update(((q.reference, q.text), encoded.row(i)) for i, q in enumerate(batch))
        embeddings = np.concatenate(out) if out else np.zeros((0, self.model.config.embed_dim), np.float32)
        return embeddings, states

    def search(self, queries: Sequence[Query], k: int) -> Run:
        if self._index is None:
            raise CirError(f"{self.name} retriever: call index(gallery) before search()")
        embeddings, states = self.encode(queries)
        scores, ids = self._index.search(embeddings, k)
        return Run((Ranking(q.id, list(i), s.tolist()) for q, s, i in zip(queries, scores, ids)), query_states=states)
