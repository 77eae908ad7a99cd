"""Why a sparse match scored what it did: the terms query and image share and what each adds to the score.

A sparse score is an inner product, sum over terms of q_t * d_t, so the shared terms' contributions add up to the
score exactly: every match is explained in words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import CirError

if TYPE_CHECKING:
    from ..index.sparse import SparseIndex

Vocabulary = Callable[[int], str] | Sequence[str]


def sparse_row(vector: object, what: str) -> sp.csr_matrix:
    """One sparse vector as a canonical 1 x V float32 CSR row (accepts a 1 x V sparse matrix or a 1-D array)."""
    if sp.issparse(vector):
        row = sp.csr_matrix(vector, dtype=np.float32, copy=True)
    else:
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1:
            raise CirError(f"the {what} vector must be one row (1 x terms), got shape {array.shape}")
        row = sp.csr_matrix(array[None, :])
    if row.shape[0] != 1:
        raise CirError(f"the {what} vector must be one row (1 x terms), got {row.shape[0]} rows")
    row.sum_duplicates()
    return row


def _term_name(vocab: Vocabulary, term: int) -> str:
    return vocab(term) if callable(vocab) else vocab[term]


def explain(query_vec: object, doc_vec: object, vocab: Vocabulary, top: int | None = 8) -> list[tuple[str, float]]:
    """The terms query and image share, with contributions q_t * d_t, largest first.

    All of them (`top=None`) sum to the score; `top` keeps the largest few. `vocab` maps a term id to its word:
    a callable (e.g. a tokenizer's id_to_token) or a list.
    """
    query, doc = sparse_row(query_vec, "query"), sparse_row(doc_vec, "image")
    if query.shape[1] != doc.shape[1]:
        raise CirError(f"query has {query.shape[1]} terms but the image vector {doc.shape[1]}")
    shared, in_query, in_doc = np.intersect1d(query.indices, doc.indices, assume_unique=True, return_indices=True)
    contributions = query.data[in_query].astype(np.float64) * doc.data[in_doc]
    order = np.argsort(-contributions, kind="stable")[:top]
    return [(_term_name(vocab, int(shared[i])), float(contributions[i])) for i in order]


def explain_result(
    index: "SparseIndex", query_vec: object, image_id: str, vocab: Vocabulary, top: int | None = 8
) -> list[tuple[str, float]]:
    """explain() for an image of a built index, with the weights the index stores (float16), so the
    contributions sum to the score its search returned."""
    query = sparse_row(query_vec, "query")
    weights = index.image_weights(image_id, query.indices)
    held = weights != 0
    doc = sp.csr_matrix((weights[held], query.indices[held], [0, int(held.sum())]), shape=query.shape)
    return explain(query, doc, vocab, top)
