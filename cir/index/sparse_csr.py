"""The csr sparse backend: an exact (or two-pass) inverted index searched by compiled loops."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ..errors import CirError, FormatError
from .sparse import SparseBackend, load_array, thread_count, top_k

# Every float16 bit pattern's float32 value: the kernel reads a stored weight through it (256 kB, stays in cache).
_FP16_TABLE = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _accumulate(indptr, images, weight_bits, table, terms, values, block_size, out):  # pragma: no cover (compiled)
    """out[image] += value * weight over the posting lists of `terms`, one block of images at a time, so the block's
    scores stay in cache; terms in the query's order (the order a sparse product would add them in)."""
    for b in range(indptr.shape[0]):
        base = b * block_size
        for j in range(terms.shape[0]):
            t, x = terms[j], values[j]
            for p in range(indptr[b, t], indptr[b, t + 1]):
                out[base + images[p]] += x * table[weight_bits[p]]


@numba.njit(nogil=True, cache=True)
def _add_looked_up(indptr, images, weight_bits, table, terms, values, rows, block_size, out):  # pragma: no cover
    """out[i] += the sum over `terms` of value * weight image rows[i] gives the term: the inverted index read as a
    forward one. `rows` ascending; per term and block, each of the block's candidates is binary-searched in the part
    of the term's sorted posting list after the previous candidate's position."""
    n = rows.shape[0]
    for j in range(terms.shape[0]):
        t, x = terms[j], values[j]
        i = 0
        while i < n:
            b = rows[i] // block_size
            base = b * block_size
            lo, end = indptr[b, t], indptr[b, t + 1]
            while i < n and rows[i] < base + block_size:
                local = rows[i] - base
                hi = end
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if images[mid] < local:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < end and images[lo] == local:
                    out[i] += x * table[weight_bits[lo]]
                i += 1


class InvertedBlocks(SparseBackend):
    """An inverted index, searched exactly or in two passes: per block of 65,536 images, each term's posting list of
    (image number in the block as uint16, weight as float16), 4 bytes a non-zero.

    A query is scored by a compiled loop over the posting lists of its terms (numba, no copies), block by block so
    that the block's scores stay in cache: the cost follows the posting lists of the query's terms. A dense score
    buffer and an exact threshold top-k finish the job.

    Two-pass search (`first_terms` > 0; approximate): only the query's `first_terms` largest-weight terms walk
    their posting lists; the `rescored` best images of that pass (at least k) then get their full scores (exact up
    to float32 rounding), the other terms' weights looked up in the same posting lists, and the top k of those are
    returned. Learned sparse queries spread their weight over many terms, so a few of the largest find the true top
    k among a few hundred images while most postings are never read; `cir bench` reports the recall against exact
    search. No extra storage. The lookups and the pool's top-k cost a fixed amount per query, so it pays off on large
    galleries (at 1M images in `cir bench`), not on small ones, where exact search is faster.
    """

    name = "csr"
    defaults = {"threads": 1, "first_terms": 0, "rescored": 1000}
    block_size = 1 << 16

    def __init__(
        self,
        indptr: np.ndarray,
        images: np.ndarray,
        weights: np.ndarray,
        n_images: int,
        threads: int = 1,
        first_terms: int = 0,
        rescored: int = 1000,
    ) -> None:
        # (blocks, vocab + 1) int64: block b's posting list of term t is images/weights[indptr[b, t]:indptr[b, t + 1]]
        self.indptr = indptr
        self.images = images  # uint16: image number within its block
        self.weights_fp16 = weights  # float16
        self._weight_bits = weights.view(np.uint16)
        self.n_images = n_images
        self.threads = threads  # queries searched in parallel; 0 = one per CPU core
        self.first_terms = first_terms  # 0: exact, every term in one pass
        self.rescored = rescored

    @classmethod
    def _search_settings(cls, params: dict[str, Any]) -> dict[str, int]:
        settings = cls.settings(params)
        bad = [n for n, v in settings.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad or settings["first_terms"] < 0 or settings["rescored"] < 1:
            raise CirError(f"csr sparse backend: threads, first_terms (>= 0) and rescored (>= 1) are whole numbers, "
                           f"got {settings}")
        return {name: int(value) for name, value in settings.items()}

    @staticmethod
    def first_pass_terms(values: np.ndarray, first_terms: int) -> np.ndarray:
        """Positions of the query terms a two-pass search walks first: the `first_terms` largest weights."""
        return np.argsort(-np.asarray(values), kind="stable")[:first_terms]

    @classmethod
    def build(cls, matrix: sp.csr_matrix, **params: Any) -> "InvertedBlocks":
        settings = cls._search_settings(params)
        n_images, vocab = matrix.shape
        indptr = np.zeros((-(-n_images // cls.block_size), vocab + 1), np.int64)
        images, weights, offset = [], [], 0
        for b, start in enumerate(range(0, n_images, cls.block_size)):
            block = matrix[start : start + cls.block_size].tocsc()
            block.sort_indices()
            images.append(block.indices.astype(np.uint16))
            weights.append(block.data.astype(np.float16))
            indptr[b] = block.indptr + offset
            offset += block.nnz
        return cls(indptr, np.concatenate(images), np.concatenate(weights), n_images, **settings)

    @classmethod
    def load(cls, folder: Path, params: dict[str, Any], n_images: int, vocab_size: int) -> "InvertedBlocks":
        indptr = load_array(folder / "indptr.npy", np.int64)
        images = load_array(folder / "images.npy", np.uint16)
        weights = load_array(folder / "weights.npy", np.float16)
        blocks = -(-n_images // cls.block_size)
        if indptr.shape != (blocks, vocab_size + 1) or len(images) != len(weights) or indptr[-1, -1] != len(images):
            raise FormatError(f"{folder}: posting arrays do not match {n_images} images and {vocab_size} terms")
        return cls(indptr, images, weights, n_images, **cls._search_settings(params))

    def save(self, folder: Path) -> None:
        np.save(folder / "indptr.npy", self.indptr)
        np.save(folder / "images.npy", self.images)
        np.save(folder / "weights.npy", self.weights_fp16)

    @property
    def params(self) -> dict[str, Any]:
        return {"threads": self.threads, "first_terms": self.first_terms, "rescored": self.rescored}

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.images.nbytes + self.weights_fp16.nbytes

    @property
    def nnz(self) -> int:
        return len(self.images)

    def search(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = queries.shape[0]
        scores = np.empty((n, k), np.float32)
        rows = np.empty((n, k), np.int64)

        def best(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            terms, values = queries.indices[span[0] : span[1]], queries.data[span[0] : span[1]]
            if 0 < self.first_terms < len(terms):
                return self._two_pass(terms, values, k)
            query_scores = self._score(terms, values)
            top = top_k(query_scores, k)
            return top, query_scores[top]

        spans = zip(queries.indptr[:-1].tolist(), queries.indptr[1:].tolist())
        # the compiled loop releases the GIL, so queries run in parallel threads.
        with ThreadPoolExecutor(max_workers=thread_count(self.threads)) as pool:
            found = tqdm(pool.map(best, spans), total=n, desc="sparse search", unit="query", disable=n < 500)
            for i, (top, top_scores) in enumerate(found):
                rows[i], scores[i] = top, top_scores
        return scores, rows

    def _score(self, terms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """One query's float32 scores for every image."""
        out = np.zeros(self.n_images, np.float32)
        if len(terms):
            _accumulate(self.indptr, self.images, self._weight_bits, _FP16_TABLE, terms.astype(np.int64),
                        values.astype(np.float32), self.block_size, out)
        return out

    def _two_pass(self, terms: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top k of the first pass's best `rescored` images, by their exact scores."""
        first = self.first_pass_terms(values, self.first_terms)
        rest = np.setdiff1d(np.arange(len(terms)), first)
        partial = self._score(terms[first], values[first])
        pool = np.sort(top_k(partial, max(self.rescored, k)))
        scores = partial[pool]
        _add_looked_up(self.indptr, self.images, self._weight_bits, _FP16_TABLE, terms[rest].astype(np.int64),
                       values[rest].astype(np.float32), pool.astype(np.int64), self.block_size, scores)
        best = np.lexsort((pool, -scores))[:k]
        return pool[best], scores[best]

    def weights(self, row: int, terms: np.ndarray) -> np.ndarray:
        block, local = divmod(int(row), self.block_size)
        out = np.zeros(len(terms), np.float32)
        for i, term in enumerate(np.asarray(terms).tolist()):
            start, end = self.indptr[block, term], self.indptr[block, term + 1]
            at = start + int(np.searchsorted(self.images[start:end], local))
            if at < end and self.images[at] == local:
                out[i] = self.weights_fp16[at]
        return out


