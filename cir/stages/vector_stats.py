"""Synthetic gallery vectors and sparse-vector statistics, for tests and the stage-one speed benchmark.

The synthetic sparse vectors imitate learned sparse retrieval output: each row has about `nnz_mean` distinct terms
drawn from a Zipf-like distribution over the vocabulary (a few very common terms, a long tail) with positive weights
shaped like `log(1 + relu(x))`. Real vectors differ, so measured speeds are indicative, not promises.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

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
