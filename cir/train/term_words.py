"""Keeping a sparse head's terms tied to their words while it trains: the words each vector should be made of, and
the losses that hold it to them.

Every training image has words (`scene`: the synthetic benchmark's scene words, shapes, colours and sizes;
`captions`: the content words of the texts of the queries whose target it is, for any benchmark). A query's words
are its target's words and its text's content words; its *new* words are those of its target that its reference
lacks (what the edit brought). Three losses use them:

- `off_word_share`: the share of a vector's top-10 weight on terms outside its words (what image and query term
  precision measure, as a loss);
- `word_margin`: a hinge pulling each of a vector's words up to a weight of at least `margin`, so that every one
  is among its terms (image term recall);
- the same hinge on a query's new words, at a higher margin, so that the word the edit asked for leads the
  explanation of its target (the explanation test);
- `free_below_words`: a hinge holding every term outside a vector's words at least `gap` below its lightest word,
  so that its words lead its top terms while the free terms (conjunctions, positions) stay beneath them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..eval.term_metrics import content_words
from ..stages.sparse_head import NUM_TERMS


class TermSets:
    """A list of term-id sets, one per row (an image or a query), stored flat; `mask(rows)` as a dense boolean."""

    def __init__(self, sets: Sequence[Sequence[int]]) -> None:
        self.indptr = np.zeros(len(sets) + 1, dtype=np.int64)
        self.indptr[1:] = np.cumsum([len(s) for s in sets])
        self.indices = np.fromiter((t for s in sets for t in s), dtype=np.int64, count=int(self.indptr[-1]))

    def mask(self, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), NUM_TERMS) True where a term belongs to the row's set."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.indptr[rows + 1] - self.indptr[rows]
        terms = np.concatenate([self.indices[self.indptr[r] : self.indptr[r + 1]] for r in rows]) if len(rows) else []
        out = torch.zeros(len(rows), NUM_TERMS, dtype=torch.bool)
        out[torch.from_numpy(np.repeat(np.arange(len(rows)), counts)), torch.as_tensor(terms, dtype=torch.long)] = True
        return out


class WordTargets:
    """The term sets of a training set's images and queries, from the words of each image."""

    def __init__(self, tokenizer, data, image_words: Sequence[Sequence[str]]) -> None:
        if len(image_words) != len(data.image_ids):
            raise ValueError(f"{len(image_words)} word lists for {len(data.image_ids)} training images")

        def pieces(words) -> set[int]:
            return {t for w in words for t in tokenizer.wordpiece_ids(w) if t < NUM_TERMS}

        image_sets = [pieces(words) for words in image_words]
        query_sets, new_sets = [], []
        for q, ref, target in zip(data.queries, data.ref_rows, data.target_rows):
            query_sets.append(image_sets[target] | pieces(content_words(tokenizer, q.text)))
            new_sets.append(image_sets[target] - image_sets[ref])
        self.images = TermSets([sorted(s) for s in image_sets])
        self.queries = TermSets([sorted(s) for s in query_sets])
        self.new = TermSets([sorted(s) for s in new_sets])


def caption_words(tokenizer, data) -> list[list[str]]:
    """Per training image, the content words of the texts of the queries whose target it is (none for an image
    that is only ever a reference): the words a benchmark's own annotations give it."""
    words: list[dict[str, None]] = [{} for _ in data.image_ids]
    for q, target in zip(data.queries, data.target_rows):
        words[target].update(dict.fromkeys(content_words(tokenizer, q.text)))
    return [list(w) for w in words]


def off_word_share(weights: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the share of the (non-negative) weights that falls outside the row's `words`; give it each
    row's top 10 (`keep_top`) for what term precision measures."""
    return ((weights * ~words).sum(1) / (weights.sum(1) + 1e-6)).mean()


def word_margin(weights: torch.Tensor, words: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over rows with words of the mean hinge relu(margin - weight) over their words."""
    gap = torch.relu(margin - weights) * words
    counts = words.sum(1)
    has = counts > 0
    if not bool(has.any()):
        return weights.sum() * 0.0
    return (gap.sum(1)[has] / counts[has]).mean()


def free_below_words(weights: torch.Tensor, words: torch.Tensor, gap: float) -> torch.Tensor:
    """Mean over rows of the summed hinge relu(w_free - (lightest present word - gap)) over their free terms; a
    word missing from the vector (weight 0) is left to `word_margin`, and a row with none of its words present
    costs nothing (charging its free terms instead collapses the vectors)."""
    present = words & (weights > 0)
    has = present.any(1)
    if not bool(has.any()):
        return weights.sum() * 0.0
    w, m = weights[has], present[has]
    lightest = torch.where(m, w, torch.full_like(w, float("inf"))).min(1, keepdim=True).values
    hinge = (torch.relu(w - (lightest - gap)) * ~words[has]).sum(1)
    return hinge.sum() / len(weights)
