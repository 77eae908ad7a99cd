"""Sparse stage-one index: learned sparse vectors (a weight per vocabulary term) matched by inner product.

One interface, `SparseIndex`, over backends registered by name in `backends`:
- `csr` (default, exact): an inverted index held as uint16 image numbers and float16 weights (4 bytes a non-zero);
  with `first_terms` set, a two-pass search over the same index (approximate, close to exact; faster on large
  galleries).
- `seismic` (optional, approximate, for large galleries): pyseismic-lsr, `pip install 'cir[seismic]'`.
Term ids must fit 16 bits (at most 65,536 terms), the storage both backends use.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numba
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from ..errors import CirError, DatasetNotFoundError, FormatError, UnknownIdError, require
from ..io import write_json
from ..registry import Registry
from ..io import atomic_directory
from .dense_index import check_ids, label_results, read_ids, read_index_settings

log = logging.getLogger(__name__)

MAX_VOCAB = 1 << 16
FLOAT16_MAX = 65504.0
FORMAT_VERSION = 1
_TOP_K_STRIDE = 32


class SparseBackend(ABC):
    """What SparseIndex needs from a backend. Rows are gallery row numbers; -1 marks a missing result."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The backend's defaults overridden by `params`, refusing names it does not know."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            known = ", ".join(cls.defaults) or "none"
            names = ", ".join(unknown)
            raise CirError(f"unknown setting(s) {names} for the {cls.name} sparse backend (known: {known})")
        return {**cls.defaults, **params}

    @classmethod
    @abstractmethod
    def build(cls, matrix: sp.csr_matrix, **params: Any) -> "SparseBackend":
        """Index a canonical float32 CSR gallery (sorted, no duplicates, weights in [0, 65504])."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, params: dict[str, Any], n_images: int, vocab_size: int) -> "SparseBackend":
        """Read what save() wrote into `folder`."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the backend's files into the (new, empty) folder."""

    @abstractmethod
    def search(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (n, k) float32 and rows (n, k) int64, best first; 1 <= k <= number of images."""

    @abstractmethod
    def weights(self, row: int, terms: np.ndarray) -> np.ndarray:
        """The weights image `row` gives `terms` (0 where it lacks a term), float32."""

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The settings save() records and load() gets back."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Memory held by the index structure."""

    @property
    @abstractmethod
    def nnz(self) -> int:
        """Stored non-zero weights."""


backends: Registry[type[SparseBackend]] = Registry("sparse index backend")


def load_array(file: Path, dtype: type) -> np.ndarray:
    """A saved index array (.npy) of the expected dtype, with errors that name the file."""
    if not file.is_file():
        raise DatasetNotFoundError(f"sparse index file not found: {file}")
    try:
        array = np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise FormatError(f"{file}: not a numpy array file ({exc})") from exc
    if array.dtype != dtype:
        raise FormatError(f"{file}: expected {np.dtype(dtype).name} values, found {array.dtype.name}")
    return array


def thread_count(threads: int) -> int:
    """A `threads` setting as a worker count: 0 means one per CPU core."""
    return int(threads) if threads > 0 else os.cpu_count() or 1


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest of a 1-D score array, best first; equal scores go to the lower position.

    Exact and about linear: the k-th best of a strided sample is a floor the true k-th best cannot be below,
    so only the few scores above it are partitioned and sorted.
    """
    k = min(k, len(scores))
    sample = scores[::_TOP_K_STRIDE]
    if len(sample) > k:
        floor = np.partition(sample, len(sample) - k)[len(sample) - k]
        candidates = np.flatnonzero(scores >= floor)
    else:
        candidates = np.arange(len(scores))
    values = scores[candidates]
    if len(candidates) > k:
        cut = np.partition(values, len(values) - k)[len(values) - k]
        above, tied = values > cut, np.flatnonzero(values == cut)
        keep = np.concatenate([np.flatnonzero(above), tied[: k - int(above.sum())]])
        candidates, values = candidates[keep], values[keep]
    return candidates[np.lexsort((candidates, -values))]


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


@backends.register("csr")
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


@contextmanager
def _native_stdout(what: str) -> Iterator[list[str]]:
    """Catch what native code prints on the process's stdout (seismic's progress chatter) and log it at debug level.

    Yields a list that holds the caught text once the block ends.
    """
    caught: list[str] = []
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield caught
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            caught.append(capture.read().decode(errors="replace").strip())
            if caught[0]:
                log.debug("%s:\n%s", what, caught[0])


@backends.register("seismic")
class SeismicBackend(SparseBackend):
    """Approximate search with Seismic (pyseismic-lsr): pruned, clustered posting lists with block summaries.

    Build settings: n_postings (posting list length kept per term, on average), centroid_fraction,
    min_cluster_size, summary_energy, max_fraction, doc_cut, nknn (k-NN graph size, 0 = none).
    Search settings: query_cut (query terms used, largest first), heap_factor (higher = faster, less exact),
    n_knn (neighbours used to refine; needs nknn > 0), sorted. threads: build and search threads (0 = all cores).
    The defaults (n_postings 16,000, query_cut 20, heap_factor 0.9) were picked by hand on the bench's 1M vectors of
    an earlier version of the shipped heads, for recall@10 near 0.95 against exact search; `cir bench` reports what
    they reach with the current ones (for which the csr backend's two-pass search is faster and smaller).
    """

    name = "seismic"
    build_defaults = {"n_postings": 16000, "centroid_fraction": 0.1, "min_cluster_size": 2, "summary_energy": 0.4,
                      "max_fraction": 1.5, "doc_cut": 15, "nknn": 0}
    search_defaults = {"query_cut": 20, "heap_factor": 0.9, "n_knn": 0, "sorted": True}
    defaults = {**build_defaults, **search_defaults, "threads": 1}
    file_stem = "seismic"

    def __init__(self, index: Any, settings: dict[str, Any], empty_rows: np.ndarray) -> None:
        self.index = index
        self.config = settings
        self.empty_rows = empty_rows  # rows without terms: Seismic skips them, which shifts its own numbering
        with _native_stdout("seismic space usage") as printed:
            index.print_space_usage_byte()
        total = re.search(r"Total:\s*(\d+)\s*Bytes", printed[0])
        self._nbytes = int(total.group(1)) if total else 0

    @staticmethod
    def _module() -> Any:
        return require("seismic", "seismic", "pyseismic-lsr")

    @classmethod
    def build(cls, matrix: sp.csr_matrix, **params: Any) -> "SeismicBackend":
        seismic = cls._module()
        settings = cls.settings(params)
        dataset = seismic.SeismicDataset(dim=matrix.shape[1])
        dataset.add_documents_by_id(
            [str(row) for row in range(matrix.shape[0])],
            matrix.indices.astype(np.int64),
            matrix.data.astype(np.float32),
            matrix.indptr.astype(np.int64),
        )
        with _native_stdout("seismic build"):
            index = seismic.SeismicIndex.build_from_dataset(
                dataset, num_threads=thread_count(settings["threads"]), **{k: settings[k] for k in cls.build_defaults}
            )
        return cls(index, settings, np.flatnonzero(np.diff(matrix.indptr) == 0).astype(np.int64))

    @classmethod
    def load(cls, folder: Path, params: dict[str, Any], n_images: int, vocab_size: int) -> "SeismicBackend":
        seismic = cls._module()
        file = folder / f"{cls.file_stem}.index.seismic"
        if not file.is_file():
            raise DatasetNotFoundError(f"seismic index file not found: {file}")
        with _native_stdout("seismic load"):
            index = seismic.SeismicIndex.load(str(file))
        return cls(index, cls.settings(params), load_array(folder / "empty_rows.npy", np.int64))

    def save(self, folder: Path) -> None:
        with _native_stdout("seismic save"):
            self.index.save(str(folder / self.file_stem))
        np.save(folder / "empty_rows.npy", self.empty_rows)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.config)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def nnz(self) -> int:
        return int(self.index.nnz)

    def search(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        string = self._module().get_seismic_string()
        spans = list(zip(queries.indptr[:-1].tolist(), queries.indptr[1:].tolist()))
        results = self.index.batch_search(
            np.array([str(i) for i in range(queries.shape[0])], dtype=string),
            [queries.indices[a:e].astype(string) for a, e in spans],
            [queries.data[a:e].astype(np.float32) for a, e in spans],
            k,
            num_threads=thread_count(self.config["threads"]),
            **{name: self.config[name] for name in self.search_defaults},
        )
        scores = np.full((queries.shape[0], k), -np.inf, np.float32)
        rows = np.full((queries.shape[0], k), -1, np.int64)
        for found in results:  # each result names its query: the batch may come back in another order
            for j, (query, score, doc) in enumerate(found[:k]):
                scores[int(query), j], rows[int(query), j] = score, int(doc)
        return scores, rows

    def weights(self, row: int, terms: np.ndarray) -> np.ndarray:
        out = np.zeros(len(terms), np.float32)
        if row in self.empty_rows:
            return out
        doc_terms, doc_weights = self.index.get(int(row) - int(np.searchsorted(self.empty_rows, row)))
        lookup = dict(zip(doc_terms, doc_weights))
        for i, term in enumerate(np.asarray(terms).tolist()):
            out[i] = lookup.get(term, 0.0)
        return out


def gallery_matrix(matrix: Any) -> sp.csr_matrix:
    """A gallery as a canonical float32 CSR matrix (images x terms), refusing what the index cannot store."""
    if not sp.issparse(matrix):
        raise CirError(f"a sparse index needs a scipy sparse matrix (images x terms), got {type(matrix).__name__}")
    if matrix.shape[1] > MAX_VOCAB:
        raise CirError(
            f"a vocabulary of {matrix.shape[1]:,} terms is too large: term ids are stored as uint16, "
            f"so at most {MAX_VOCAB:,} terms"
        )
    if matrix.shape[0] == 0:
        raise CirError("no images to index: the gallery matrix has no rows")
    matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    bad = np.flatnonzero(~np.isfinite(matrix.data) | (matrix.data < 0) | (matrix.data > FLOAT16_MAX))
    if bad.size:
        row = int(np.searchsorted(matrix.indptr, bad[0], side="right") - 1)
        raise CirError(
            f"image row {row}, term {matrix.indices[bad[0]]}: weight {matrix.data[bad[0]]} is not in "
            f"[0, {FLOAT16_MAX:g}] (learned sparse weights are non-negative and stored as float16)"
        )
    return matrix


def _term_stats(matrix: sp.csr_matrix) -> dict[str, float]:
    """How many terms images hold and how long posting lists are: what sparse search cost follows."""
    terms_per_image = np.diff(matrix.indptr)
    posting_lengths = np.bincount(matrix.indices, minlength=matrix.shape[1])
    return {
        "terms_per_image_mean": float(terms_per_image.mean()),
        "terms_per_image_median": float(np.median(terms_per_image)),
        "terms_per_image_max": int(terms_per_image.max()),
        "images_without_terms": int((terms_per_image == 0).sum()),
        "terms_used": int((posting_lengths > 0).sum()),
        "longest_posting_list": int(posting_lengths.max()),
    }


class SparseIndex:
    """Inner-product search over sparse image vectors, with image ids; build(), search(), save(), load()."""

    def __init__(self, backend: SparseBackend, ids: list[str], vocab_size: int, term_stats: dict[str, float]) -> None:
        self.backend = backend
        self.ids = ids
        self.vocab_size = vocab_size
        self.term_stats = term_stats
        self._rows = {image_id: row for row, image_id in enumerate(ids)}

    @classmethod
    def build(cls, matrix: Any, ids: Sequence[str], backend: str = "csr", **params: Any) -> "SparseIndex":
        """Index `matrix` (scipy sparse, images x terms) under `ids` with the named backend and its settings."""
        backend_class = backends.get(backend)
        matrix = gallery_matrix(matrix)
        ids = check_ids(ids, matrix.shape[0])
        return cls(backend_class.build(matrix, **params), ids, matrix.shape[1], _term_stats(matrix))

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def nnz(self) -> int:
        return self.backend.nnz

    @property
    def nbytes(self) -> int:
        return self.backend.nbytes

    def stats(self) -> dict[str, Any]:
        """Size and shape of the index: images, terms, non-zeros, bytes, and how terms spread over images."""
        return {"backend": self.backend.name, "images": self.ntotal, "vocab_size": self.vocab_size, "nnz": self.nnz,
                "bytes": self.nbytes, "bytes_per_nonzero": self.nbytes / max(1, self.nnz), **self.term_stats}

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The k best images per query row: scores (n, min(k, ntotal)) float32, best first, and their ids.

        Exact backends fill every row; an approximate one may find fewer: the row's ids list is shorter and the
        remaining scores are -inf.
        """
        queries = self._queries(queries)
        k = min(int(k), self.ntotal)
        if k <= 0 or queries.shape[0] == 0:
            return np.zeros((queries.shape[0], max(k, 0)), np.float32), [[] for _ in range(queries.shape[0])]
        scores, rows = self.backend.search(queries, k)
        return label_results(scores, rows, self.ids)

    def _queries(self, queries: Any) -> sp.csr_matrix:
        if not sp.issparse(queries):
            kind = type(queries).__name__
            raise CirError(f"sparse queries must be a scipy sparse matrix (queries x terms), not {kind}")
        if queries.shape[1] != self.vocab_size:
            raise CirError(f"queries have {queries.shape[1]} terms but the index vocabulary has {self.vocab_size}")
        queries = sp.csr_matrix(queries, dtype=np.float32, copy=True)
        queries.sum_duplicates()
        if not np.isfinite(queries.data).all():
            raise CirError("sparse queries hold NaN or infinite weights")
        return queries

    def row(self, image_id: str) -> int:
        """The gallery row of an image id."""
        try:
            return self._rows[image_id]
        except KeyError:
            raise UnknownIdError(f"image {image_id!r} is not in this sparse index ({self.ntotal} images)") from None

    def image_weights(self, image_id: str, terms: np.ndarray) -> np.ndarray:
        """The weights the index holds for `terms` of one image (0 where it lacks a term), float32."""
        return self.backend.weights(self.row(image_id), np.asarray(terms, dtype=np.int64))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder `path`: settings.json, ids.json, the backend's files (replacing an older index at once)."""
        with atomic_directory(path) as tmp:
            self.backend.save(tmp)
            write_json(tmp / "ids.json", self.ids, indent=None)
            write_json(tmp / "settings.json", {"format": FORMAT_VERSION, "backend": self.backend.name,
                                               "params": self.backend.params, "vocab_size": self.vocab_size,
                                               "ntotal": self.ntotal, "term_stats": self.term_stats})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> "SparseIndex":
        """Read a folder written by save(); `overrides` replace saved backend settings (threads, query_cut...)."""
        path = Path(path)
        settings = read_index_settings(path, "sparse index")
        try:
            keys = ("backend", "params", "vocab_size", "ntotal", "term_stats")
            name, params, vocab, ntotal, stats = (settings[key] for key in keys)
        except KeyError as exc:
            raise FormatError(f"{path / 'settings.json'}: missing entry {exc}") from None
        backend = backends.get(name).load(path, {**params, **overrides}, ntotal, vocab)
        return cls(backend, read_ids(path, ntotal), vocab, stats)
