"""The seismic sparse backend: approximate search with pyseismic-lsr (optional)."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp

from ..errors import DatasetNotFoundError, require
from .sparse import SparseBackend, load_array, thread_count

log = logging.getLogger(__name__)


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


