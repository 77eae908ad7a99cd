"""Do a sparse stage one's terms mean their words? Four fractions measured against what each image shows.

With `words_of_image` (image id -> the words of what it shows: on the synthetic benchmark its scene's shapes,
colours and sizes, `cir.data.synth.words`) and `edit_words` (query id -> the words its edit brings into the target):

- `term_precision_image`: per image, the share of its vector's top-10 terms' weight that falls on the WordPieces of
  its words; the mean over the images.
- `term_recall_image`: the share of images whose every `recall_words` word (shapes and colours) has all its
  WordPieces among the vector's terms.
- `term_precision_query`: per query, the same share for its top-10 terms against the WordPieces of its target's
  words and of its text's content words (function words such as "the" or "to" do not count); the mean.
- `explanation@3`: of the queries whose edit brings a word and whose target stage one's `run` (the reference dropped
  already dropped where the protocol drops it, or `exclude_reference`) ranks in its top 10, the share
  whose target's top-3 explanation terms (the shared terms' contributions, WordPieces joined into words) hold every
  one of the edit's words.

Definitions and figures: docs/sparse-terms.md.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..stages.sparse_explain import explain

# Words that carry no content of a scene or an edit: never a correct term for a query, whatever its text says.
FUNCTION_WORDS = frozenset(
    "a an the this that these those it its one ones of in on at to into onto over from by with without for and or "
    "but then so as is are be been was were it's there here which who what where while after before until also "
    "just only now all any some other another each both either very please".split()
)


def content_words(tokenizer, text: str) -> list[str]:
    """The words of `text` that can name something: no function words, no punctuation."""
    return [w for w in tokenizer.words(text) if w.isalnum() and w not in FUNCTION_WORDS]


class _Pieces:
    """Word -> the ids of its WordPieces, memoised (the same few words are looked up millions of times)."""

    def __init__(self, tokenizer) -> None:
        self.of = lru_cache(maxsize=None)(lambda word: frozenset(tokenizer.wordpiece_ids(word)))

    def union(self, words) -> set[int]:
        return set().union(*(self.of(w) for w in words)) if words else set()


def _top_share(row: sp.csr_matrix, correct: set[int], top: int) -> float:
    """The share of a row's `top` largest weights that falls on the `correct` term ids (0 for an empty row)."""
    if row.nnz == 0:
        return 0.0
    order = np.argsort(-row.data, kind="stable")[:top]
    weights, terms = row.data[order], row.indices[order]
    hit = np.fromiter((int(t) in correct for t in terms), dtype=bool, count=len(terms))
    return float(weights[hit].sum() / weights.sum())


def term_metrics(
    tokenizer,
    image_ids: Sequence[str],
    image_vectors: sp.csr_matrix,
    queries: Sequence,
    query_vectors: sp.csr_matrix,
    targets: Mapping[str, Sequence[str]],
    run,
    words_of_image: Mapping[str, Sequence[str]],
    recall_words: Mapping[str, Sequence[str]],
    edit_words: Mapping[str, Sequence[str]],
    top: int = 10,
    explain_top: int = 3,
    exclude_reference: bool = False,
) -> dict[str, float]:
    """The four fractions of the module docstring (and how many queries the explanation test counted)."""
    pieces = _Pieces(tokenizer)
    image_vectors, query_vectors = sp.csr_matrix(image_vectors), sp.csr_matrix(query_vectors)
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    precision, recalled = [], []
    for i, image_id in enumerate(image_ids):
        row = image_vectors[i]
        precision.append(_top_share(row, pieces.union(words_of_image[image_id]), top))
        recalled.append(pieces.union(recall_words[image_id]) <= set(row.indices.tolist()))
    query_precision, explained, tested = [], 0, 0
    for j, query in enumerate(queries):
        target = targets[query.id][0]
        truth = list(words_of_image[target]) + content_words(tokenizer, query.text)
        row = query_vectors[j]
        query_precision.append(_top_share(row, pieces.union(truth), top))
        wanted = edit_words.get(query.id, ())
        ranked = [i for i in run[query.id].ids[: top + 1] if not (exclude_reference and i == query.reference)]
        if not wanted or target not in ranked[:top]:
            continue
        tested += 1
        terms = explain(row, image_vectors[row_of[target]], tokenizer.id_to_token, top=None)
        words = tokenizer.join_pieces(terms, truth)[:explain_top]
        explained += set(wanted) <= {w for w, _ in words}
    return {
        "term_precision_image": float(np.mean(precision)) if precision else 0.0,
        "term_recall_image": float(np.mean(recalled)) if recalled else 0.0,
        "term_precision_query": float(np.mean(query_precision)) if query_precision else 0.0,
        "explanation@3": explained / tested if tested else 0.0,
        "explanation@3 queries": tested,
    }
