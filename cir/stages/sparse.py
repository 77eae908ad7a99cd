"""Sparse stage one: queries and images as weighted WordPiece terms, matched through an inverted index.

Every dimension is a word, so every match can be explained ("blue 1.31, circle 0.92, ...").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from ..cache import FeatureCache
from ..errors import CirError
from ..types import Gallery, Query, Ranking, Run
from .dense import DenseRetriever, QueryStates
from .encoding import module_fingerprint
from .sparse_head import NUM_TERMS, SparseEncoder
from .sparse_explain import explain
from ..index.sparse import SparseIndex


class SparseRetriever(DenseRetriever):
    """The dense retriever's encoders, followed by the dense-to-sparse heads and an inverted index.

    Settings (`stage_one` of a config): `sparse_head` (a heads file, or a SparseEncoder; default: the heads that
    came with the model's pretrained tag), `index` (csr | seismic | milvus), `index_params`, `batch_size`,
    `word_terms` (false: heads with word terms searched with their distilled terms alone, cir.stages.sparse_words).
    """

    name = "sparse"

    def __init__(
        self,
        model,
        cache: FeatureCache | None = None,
        sparse_head: str | SparseEncoder | None = None,
        index: str = "csr",
        index_params: dict | None = None,
        batch_size: int = 64,
        max_results: int | None = None,
        word_terms: bool = True,
    ) -> None:
        super().__init__(model, cache, index, index_params, batch_size, max_results)
        head = sparse_head if sparse_head is not None else model.pretrained_cfg.get("sparse_head")
        if head is None:
            raise CirError(
                f"model {model.name!r} came with no sparse heads (no pretrained tag that ships them): "
                "give stage_one.sparse_head"
            )
        self.sparse = head if isinstance(head, SparseEncoder) else SparseEncoder.load(head, model)
        if not word_terms:
            self.sparse = self.sparse.distilled()
        self._sparse_index: SparseIndex | None = None
        self.image_vectors = None
        # what WordPieces are joined back into: the heads' word terms and the words of the texts searched so far
        self._lexicon: set[str] = set(self.sparse.words.words) if self.sparse.words is not None else set()

    def index(self, gallery: Gallery) -> None:
        features = self.encoder.index(gallery)
        self.image_vectors = self.gallery_vectors(features)
        if self.index_kind == "milvus":
            self._sparse_index = self.milvus_index(gallery, features.ids, sparse=self.image_vectors,
                                                   sparse_head=module_fingerprint(self.sparse))
        else:
            self._sparse_index = SparseIndex.build(self.image_vectors, features.ids, backend=self.index_kind,
                                                   **self.index_params)

    def gallery_vectors(self, features) -> sp.csr_matrix:
        """The sparse vectors of a gallery's cached stage-one features (heads with word terms read its tokens)."""
        tokens = features["tokens"] if self.sparse.words is not None else None
        return self.sparse.encode_images(features["embeddings"], tokens)

    def query_vectors(self, queries: Sequence[Query]) -> tuple[sp.csr_matrix, np.ndarray, QueryStates]:
        """The queries' sparse vectors, with their dense embeddings and the stage-one states stage two starts from."""
        self._learn_words(queries)
        if self.sparse.words is None:
            embeddings, states = self.encode(queries)
            return self.sparse.encode_queries(embeddings), embeddings, states
        blocks = []

        def each_batch(ref, encoded) -> None:
            blocks.append(self.sparse.encode_queries(encoded.embeddings.float().cpu(), encoded.fused.float().cpu(),
                                                     encoded.attention_mask.cpu(), ref.float().cpu()))

        embeddings, states = self.encode(queries, each_batch)
        vectors = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, NUM_TERMS), dtype=np.float32)
        return vectors, embeddings, states

    def encode_queries(self, queries: Sequence[Query]) -> sp.csr_matrix:
        """The queries' sparse vectors."""
        return self.query_vectors(queries)[0]

    def _learn_words(self, queries: Sequence[Query]) -> None:
        tokenizer = self.model.tokenizer
        for q in queries:
            self._lexicon.update(w for w in tokenizer.words(q.text) if w.isalnum())

    def search(self, queries: Sequence[Query], k: int) -> Run:
        self._indexed()  # before any query is encoded
        vectors, _, states = self.query_vectors(queries)
        return self.rank(queries, vectors, k, states)

    def rank(self, queries: Sequence[Query], vectors: sp.csr_matrix, k: int, states: QueryStates | None = None) -> Run:
        """The top k of the indexed gallery for queries whose sparse vectors (`query_vectors`) are already made."""
        scores, ids = self._indexed().search(vectors, k)
        rankings = (Ranking(q.id, list(i), np.asarray(s)[: len(i)].tolist()) for q, s, i in zip(queries, scores, ids))
        return Run(rankings, query_states=states)

    def _indexed(self):
        """The gallery's index (a SparseIndex, or a Milvus collection), or the error for a search before index()."""
        if self._sparse_index is None:
            raise CirError(f"{self.name} retriever: call index(gallery) before search()")
        return self._sparse_index

    def explain(self, query: Query, image_id: str, top: int = 8) -> list[tuple[str, float]]:
        """The terms query and image share, with their contributions to the score, largest first; WordPieces of a
        word of the texts searched (this query's included) are joined back into it ("cy" + "##an" -> "cyan")."""
        return self.explain_many(query, [image_id], top)[image_id]

    def explain_many(self, query: Query, image_ids: Sequence[str], top: int = 8) -> dict[str, list[tuple[str, float]]]:
        """`explain` for several images of one query, encoding the query once."""
        vector = self.encode_queries([query])
        return {i: terms[:top] for i, terms in zip(image_ids, self._shared_terms(vector, image_ids))}

    def explain_mismatch(self, query: Query, image_id: str, target_id: str, top: int = 3) -> list[tuple[str, float]]:
        """What made `image_id` outscore `target_id` for this query: the terms (as words) whose contribution to the
        image exceeds theirs to the target, by how much, largest first. The first one misled the search."""
        vector = self.encode_queries([query])
        wrong, right = (dict(terms) for terms in self._shared_terms(vector, [image_id, target_id]))
        excess = {term: w - right.get(term, 0.0) for term, w in wrong.items() if w > right.get(term, 0.0)}
        return sorted(excess.items(), key=lambda item: -item[1])[:top]

    def _shared_terms(self, vector, image_ids: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Per image, all shared terms with their contributions, WordPieces joined into words, largest first."""
        if self.image_vectors is None:
            raise CirError(f"{self.name} retriever: call index(gallery) before explaining a match")
        tokenizer = self.model.tokenizer
        rows = self.encoder.features.rows(list(image_ids))
        return [tokenizer.join_pieces(explain(vector, self.image_vectors[row], tokenizer.id_to_token, None), self._lexicon)
                for row in rows]
