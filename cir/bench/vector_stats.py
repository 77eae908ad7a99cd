"""Gallery vectors for measuring stage one at sizes no real gallery reaches: generators and statistics matchers.

- `synthetic_sparse` / `synthetic_dense`: parametric vectors. The sparse ones imitate learned sparse retrieval
  output: about `nnz_mean` distinct terms a row, drawn from a Zipf-like distribution over the vocabulary, with
  positive weights shaped like `log(1 + relu(x))`.
- `DenseStatistics` / `SparseStatistics`: fitted to a model's real vectors, they draw more vectors like them
  (a Gaussian for dense embeddings; term document frequencies, non-zero counts and per-term weights for sparse
  ones), so a measured speed follows the model's real posting-list lengths and embedding geometry.
- `expected_flops`: the expected work of a sparse inner product, per query-image pair.

The benchmark that uses them is `cir bench` (cir.bench).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

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


def _first_distinct(terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mask of the draws each row keeps: a term's first draw in its row, up to the row's first `counts[row]` of them."""
    n_rows, width = terms.shape
    # Sort each row by (term, draw position): a term's first draw is where the term changes.
    ordered = np.sort(terms.astype(np.int64) * width + np.arange(width), axis=1)
    ordered_terms = ordered // width
    is_first = np.ones(ordered.shape, dtype=bool)
    is_first[:, 1:] = ordered_terms[:, 1:] != ordered_terms[:, :-1]
    first_positions = (ordered - ordered_terms * width + (np.arange(n_rows) * width)[:, None])[is_first]
    first = np.zeros(terms.shape, dtype=bool)
    first.flat[first_positions] = True
    return first & (np.cumsum(first, axis=1) <= counts[:, None])


def _sample_distinct_terms(
    counts: np.ndarray, sampler: _TermSampler, rng: np.random.Generator, max_rounds: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first `counts[row]` distinct terms of an endless sequence of independent draws (successive sampling).

    Returns (row, term) pairs. Rows still short after a round get as many draws again appended to theirs, so a
    row whose draws keep hitting its frequent terms still ends with its count; `counts` must not exceed the number
    of terms that can be drawn. A row still short after `max_rounds` keeps what it has.
    """
    pending = np.arange(len(counts))
    terms = sampler(rng.random((len(counts), int(2 * counts.max(initial=0) + 16))))
    rows_out, terms_out = [], []
    for round_number in range(max_rounds):
        keep = _first_distinct(terms, counts[pending])
        done = (keep.sum(axis=1) >= counts[pending]) | (round_number == max_rounds - 1)
        kept_rows, kept_draws = np.nonzero(keep[done])
        rows_out.append(pending[done][kept_rows])
        terms_out.append(terms[done][kept_rows, kept_draws])
        pending, terms = pending[~done], terms[~done]
        if not pending.size:
            break
        terms = np.concatenate([terms, sampler(rng.random(terms.shape))], axis=1)
    if pending.size:
        log.warning("%d rows hold fewer distinct terms than drawn for: their draws kept repeating", pending.size)
    return np.concatenate(rows_out), np.concatenate(terms_out)


def _draw_sparse_rows(
    counts: np.ndarray,
    sampler: _TermSampler,
    term_ids: np.ndarray,
    draw_weights: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    vocab: int,
    rng: np.random.Generator,
) -> sp.csr_matrix:
    """A float32 CSR matrix whose row i holds `counts[i]` distinct terms: sampler draws mapped through `term_ids`,
    weighted by `draw_weights(terms, rng)`. Built in chunks of rows, so a million rows fit in memory."""
    n = len(counts)
    blocks = []
    for start in tqdm(range(0, n, _ROWS_PER_CHUNK), desc="drawing sparse vectors", unit="chunk", disable=n <= _ROWS_PER_CHUNK):
        rows, draws = _sample_distinct_terms(counts[start : start + _ROWS_PER_CHUNK], sampler, rng)
        terms = term_ids[draws]
        shape = (min(_ROWS_PER_CHUNK, n - start), vocab)
        blocks.append(sp.csr_matrix((draw_weights(terms, rng).astype(np.float32), (rows, terms)), shape=shape))
    matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, vocab), dtype=np.float32)
    matrix.sort_indices()
    return matrix


def synthetic_sparse(
    n: int,
    vocab: int = BERT_VOCAB_SIZE,
    nnz_mean: float = 50,
    zipf_a: float = 1.0,
    seed: int = 0,
    term_seed: int = 0,
) -> sp.csr_matrix:
    """`n` random sparse vectors (float32 CSR, n x vocab) with about `nnz_mean` distinct Zipf-distributed terms each.

    Terms per row are Poisson(`nnz_mean`) (at least 1); weights are log(1 + x), x exponential with mean 2.
    `term_seed` fixes which term ids are frequent, so galleries and queries drawn with different `seed`s share
    their frequent terms, as real queries and documents do.
    """
    sampler = _TermSampler(zipf_term_probabilities(vocab, zipf_a, term_seed))
    rng = np.random.default_rng(seed)
    counts = rng.poisson(nnz_mean, n).clip(1, vocab)
    return _draw_sparse_rows(counts, sampler, np.arange(vocab), lambda terms, r: np.log1p(r.exponential(2.0, terms.size)), vocab, rng)


def synthetic_dense(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    """`n` random L2-normalised float32 vectors of size `dim`."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


@dataclass
class DenseStatistics:
    """A Gaussian fitted to real embeddings: their mean, the top principal directions scaled by their standard
    deviations (`components`, rank x dim) and a per-dimension residual standard deviation for the variance the
    kept directions miss. Samples are L2-normalised, as the model's embeddings are."""

    mean: np.ndarray
    components: np.ndarray
    residual_std: np.ndarray
    fitted_rows: int

    @classmethod
    def fit(cls, vectors: np.ndarray, rank: int | None = None) -> "DenseStatistics":
        """Fit to `vectors` (n, dim); `rank` principal directions (default: all the data supports, min(dim, n - 1))."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise CirError(f"fitting a Gaussian needs at least 2 vectors of shape (n, dim), got shape {x.shape}")
        mean = x.mean(axis=0)
        centred = x - mean
        rank = min(x.shape[1], len(x) - 1) if rank is None else max(1, min(rank, x.shape[1], len(x) - 1))
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        components = directions[:rank] * (singular[:rank] / np.sqrt(len(x) - 1))[:, None]
        residual = centred.var(axis=0, ddof=1) - (components**2).sum(axis=0)
        return cls(mean, components, np.sqrt(np.clip(residual, 0.0, None)), len(x))

    @property
    def rank(self) -> int:
        return len(self.components)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """`n` L2-normalised float32 vectors drawn from the fitted Gaussian."""
        rng = np.random.default_rng(seed)
        out = np.empty((n, len(self.mean)), np.float32)
        for start in range(0, n, _ROWS_PER_CHUNK):
            size = min(_ROWS_PER_CHUNK, n - start)
            x = self.mean + rng.standard_normal((size, self.rank)) @ self.components
            x += rng.standard_normal(x.shape) * self.residual_std
            out[start : start + size] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    def describe(self) -> dict[str, Any]:
        return {"model": "Gaussian: mean + rank-r principal directions + diagonal residual, L2-normalised",
                "fitted_rows": self.fitted_rows, "dim": len(self.mean), "rank": self.rank}


def _newton_increasing_concave(
    value: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], start: np.ndarray, floor: np.ndarray, tolerance: float
) -> np.ndarray:
    """Roots of increasing concave functions (one per entry), `value(x)` giving (f(x), f'(x)). From below the root,
    Newton steps climb to it without overshooting; from above, one step lands below (at least at `floor`)."""
    x = start
    for _ in range(100):
        f, slope = value(x)
        if np.abs(f).max() < tolerance:
            break
        x = np.maximum(x - f / np.maximum(slope, 1e-300), floor)
    return x


def successive_sampling_weights(document_frequency: np.ndarray, row_sizes: np.ndarray, tolerance: float = 1e-4) -> np.ndarray:
    """Draw weights w (summing to 1) under which rows of `row_sizes` distinct terms, each the first distinct terms
    of independent draws from w, hold term t with probability `document_frequency[t]`.

    Drawing terms in proportion to their document frequency would under-represent frequent terms (a term counts
    once per row however often it is drawn). Rosen's approximation gives the inclusion probability of t in a row
    of m terms as 1 - exp(-lambda_m w_t), lambda_m solving sum_t (1 - exp(-lambda_m w_t)) = m. The lambdas and
    the weights are solved for in turn (Newton's method for each) until the predicted frequencies match.
    """
    frequency = np.asarray(document_frequency, dtype=np.float64)
    active = np.flatnonzero(frequency > 0)  # terms never seen are never drawn
    target = np.minimum(frequency[active], 1 - 1e-6)  # a term in every row would need an infinite weight
    sizes, rows_of_size = np.unique(np.asarray(row_sizes), return_counts=True)
    share = rows_of_size[sizes > 0] / len(row_sizes)
    # A row of as many terms as there are holds them all; the approximation needs a size just below that.
    sizes = np.minimum(sizes[sizes > 0], len(active) - 0.5).astype(np.float64)
    weights = target / target.sum()
    lam = sizes.copy()
    for _ in range(50 if sizes.size else 0):

        def row_size_gap(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            decay = np.exp(-lam[:, None] * weights[None, :])
            return (1.0 - decay).sum(axis=1) - sizes, (weights[None, :] * decay).sum(axis=1)

        # sum_t (1 - exp(-m w_t)) <= m, so lambda_m >= m.
        lam = _newton_increasing_concave(row_size_gap, np.maximum(lam, sizes), sizes, 1e-6 * sizes.max())

        def frequency_gap(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            decay = np.exp(-lam[:, None] * w[None, :])
            return share @ (1.0 - decay) - target, share @ (lam[:, None] * decay)

        if np.abs(frequency_gap(weights)[0]).max() < tolerance:
            break
        weights = _newton_increasing_concave(frequency_gap, weights, np.zeros_like(weights), tolerance / 10)
    out = np.zeros_like(frequency)
    out[active] = weights / weights.sum()
    return out


@dataclass
class SparseStatistics:
    """What a gallery's sparse vectors look like: terms per row (the observed counts, drawn from as they are),
    each term's document frequency, and each term's observed weights (a drawn term takes one of them at random)."""

    vocab: int
    row_sizes: np.ndarray  # non-zeros of each fitted row
    document_frequency: np.ndarray  # (vocab,) fraction of fitted rows holding each term
    weight_offsets: np.ndarray  # (vocab + 1,) term t's observed weights are weights[offsets[t]:offsets[t + 1]]
    weights: np.ndarray
    draw_weights: np.ndarray  # (vocab,) calibrated draw probabilities (successive_sampling_weights)

    @classmethod
    def fit(cls, matrix: sp.spmatrix) -> "SparseStatistics":
        """Fit to a sparse matrix (rows x terms) of non-negative weights."""
        matrix = sp.csc_matrix(matrix, dtype=np.float32, copy=True)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        if matrix.shape[0] == 0 or matrix.nnz == 0:
            raise CirError(f"cannot fit sparse statistics to a matrix without non-zeros (shape {matrix.shape})")
        row_sizes = np.bincount(matrix.indices, minlength=matrix.shape[0])
        frequency = np.diff(matrix.indptr) / matrix.shape[0]
        draw = successive_sampling_weights(frequency, row_sizes)
        return cls(matrix.shape[1], row_sizes, frequency, matrix.indptr.astype(np.int64), matrix.data.copy(), draw)

    def sample(self, n: int, seed: int = 0) -> sp.csr_matrix:
        """`n` float32 CSR rows drawn to match the fitted statistics."""
        rng = np.random.default_rng(seed)
        active = np.flatnonzero(self.draw_weights > 0)
        counts = rng.choice(self.row_sizes, n).clip(0, active.size)
        return _draw_sparse_rows(counts, _TermSampler(self.draw_weights[active]), active, self._observed_weights, self.vocab, rng)

    def _observed_weights(self, terms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        start = self.weight_offsets[terms]
        available = self.weight_offsets[terms + 1] - start
        return self.weights[start + (rng.random(terms.size) * available).astype(np.int64)]

    def describe(self) -> dict[str, Any]:
        return {"model": "non-zeros per row drawn from the observed counts; terms by successive sampling calibrated "
                         "to the observed document frequencies; each weight drawn from the term's observed weights",
                "fitted_rows": len(self.row_sizes), "terms_used": int((self.document_frequency > 0).sum()),
                "nnz_mean": float(self.row_sizes.mean())}
