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
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import CirError, DatasetNotFoundError, FormatError, UnknownIdError
from ..io import atomic_directory, write_json
from ..registry import Registry
from .dense_faiss import check_ids, label_results, read_ids, read_index_settings

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
backends.register("csr", "cir.index.sparse_csr:InvertedBlocks")
backends.register("seismic", "cir.index.sparse_seismic:SeismicBackend")


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


def _term_rates(matrix: sp.spmatrix) -> np.ndarray:
    """The fraction of rows holding each term (non-zero weight)."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    return np.bincount(matrix.indices[matrix.data != 0], minlength=matrix.shape[1]) / max(1, matrix.shape[0])


def expected_flops(query_matrix: sp.spmatrix, doc_matrix: sp.spmatrix) -> float:
    """Expected multiply-adds per query-image pair of a sparse inner product: sum over terms of p_q(t) * p_d(t).

    p_q(t) and p_d(t) are the fractions of queries and of images holding term t (the FLOPs measure of learned
    sparse retrieval, Paria et al. 2020, which SPLADE-style training regularises). Times the gallery size, it is
    the work an exact inverted index does per query; a dense index does `dim` per pair.
    """
    if query_matrix.shape[1] != doc_matrix.shape[1]:
        raise CirError(f"queries have {query_matrix.shape[1]} terms but the images {doc_matrix.shape[1]}")
    return float(_term_rates(query_matrix) @ _term_rates(doc_matrix))


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
