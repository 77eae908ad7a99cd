"""Dense stage-one index: FAISS inner-product search over L2-normalised float32 vectors, saved beside its ids.

Three kinds: `flat` (exact), `ivf` (inverted file, k-means cells; nlist, nprobe) and `hnsw` (graph; M,
ef_construction, ef_search). Approximate kinds never hand back fewer than min(k, ntotal) results: a query they
leave short is completed by an exact pass, so no FAISS `-1` id ever reaches the caller.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from ..errors import CirError, DatasetNotFoundError, FormatError
from ..io import atomic_directory, read_json, write_json

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
DEVICES = ("auto", "cpu", "gpu")
FORMAT_VERSION = 1
_NORM_TOLERANCE = 1e-3
_GPU_MAX_K = 2048  # faiss GPU indexes return at most this many results per query
_KIND_PARAMS = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("M", "ef_construction", "ef_search")}


def label_results(scores: np.ndarray, rows: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, list[list[str]]]:
    """Turn search output rows (-1 = no result) into id lists; missing results get score -inf and no id."""
    scores = np.array(scores, dtype=np.float32)
    scores[rows < 0] = -np.inf
    return scores, [[ids[r] for r in row if r >= 0] for row in rows.tolist()]


def read_index_settings(path: Path, kind_of_index: str) -> dict[str, Any]:
    """The settings.json of a saved index folder, with a clear error when the folder is not one."""
    if not path.is_dir():
        raise DatasetNotFoundError(f"{kind_of_index} not found: {path} (expected a folder written by save())")
    settings = read_json(path / "settings.json", f"{kind_of_index} settings")
    if not isinstance(settings, dict) or settings.get("format") != FORMAT_VERSION:
        raise FormatError(f"{path / 'settings.json'}: not a cir {kind_of_index} of format {FORMAT_VERSION}")
    return settings


def read_ids(path: Path, expected: int) -> list[str]:
    """ids.json of a saved index: a list of `expected` strings."""
    ids = read_json(path / "ids.json", "index ids")
    if not isinstance(ids, list) or len(ids) != expected or not all(isinstance(i, str) for i in ids):
        raise FormatError(f"{path / 'ids.json'}: expected a list of {expected} image ids")
    return ids


def check_ids(ids: Sequence[str], n: int) -> list[str]:
    """The image ids of `n` indexed vectors: as many as the vectors, unique, strings."""
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise CirError(f"{n} vectors but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, count in Counter(ids).items() if count > 1)
        raise CirError(f"duplicate image id {duplicate!r}: each indexed vector needs its own id")
    return ids


def _gpu_count() -> int:
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def use_gpu(device: str, kind: str) -> bool:
    """Whether to search on a GPU. faiss-gpu does not fall back to the CPU by itself, so decide here."""
    if device not in DEVICES:
        raise CirError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
    if device == "cpu":
        return False
    gpus = _gpu_count()
    if device == "gpu":
        if gpus == 0:
            raise CirError(
                "device='gpu' but the installed faiss sees no GPU; for faiss with GPU support: pip install 'cir[gpu]'"
            )
        if kind == "hnsw":
            raise CirError(
                "faiss has no GPU version of the hnsw index: use kind 'flat' or 'ivf' on the GPU, or device='cpu'"
            )
        return True
    return gpus > 0 and kind != "hnsw"


def _float_matrix(vectors: np.ndarray, what: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise CirError(f"{what} must be a 2-D array (n, dim), got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise CirError(f"{what} hold NaN or infinite values")
    return vectors


def _default_params(kind: str, n: int) -> dict[str, int]:
    if kind == "ivf":
        # About 4 sqrt(n) cells, but at least 39 training vectors per cell (faiss's own floor).
        nlist = max(1, min(n // 39, round(4 * math.sqrt(n))))
        return {"nlist": nlist, "nprobe": min(nlist, 8)}
    if kind == "hnsw":
        return {"M": 32, "ef_construction": 200, "ef_search": 128}
    return {}


def _make_index(kind: str, dim: int, params: dict[str, int]) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.nprobe = params["nprobe"]
        return index
    index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = params["ef_construction"]
    index.hnsw.efSearch = params["ef_search"]
    return index


def _index_nbytes(index: faiss.Index, kind: str) -> int:
    """Memory held by the vectors and the index structure (not allocator overhead)."""
    vectors = index.ntotal * index.d * 4
    if kind == "ivf":
        return vectors + index.ntotal * 8 + index.nlist * index.d * 4  # codes, 64-bit ids, centroids
    if kind == "hnsw":
        graph = index.hnsw.neighbors.size() * 4 + index.hnsw.levels.size() * 4 + index.hnsw.offsets.size() * 8
        return vectors + graph
    return vectors


class DenseIndex:
    """Inner-product search over unit vectors, with image ids; build(), search(), save(), load()."""

    def __init__(
        self,
        index: faiss.Index,
        ids: list[str],
        kind: str,
        params: dict[str, int],
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.index = index  # always the CPU index: what is saved and measured
        self.ids = ids
        self.kind = kind
        self.params = params
        self.threads = threads
        self._gpu_resources = None
        self._search_index = index
        if use_gpu(device, kind):
            self._gpu_resources = faiss.StandardGpuResources()
            self._search_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
            log.info("dense %s index of %d vectors moved to the GPU", kind, index.ntotal)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        kind: str = "flat",
        device: str = "auto",
        threads: int | None = None,
        **params: int,
    ) -> "DenseIndex":
        """Index `vectors` (n, dim), L2-normalised, under `ids`. `params` are the kind's settings (see KINDS)."""
        if kind not in KINDS:
            raise CirError(f"unknown dense index kind {kind!r} (known: {', '.join(KINDS)})")
        unknown = sorted(set(params) - set(_KIND_PARAMS[kind]))
        if unknown:
            known = ", ".join(_KIND_PARAMS[kind]) or "none"
            raise CirError(f"unknown setting(s) {', '.join(unknown)} for a {kind} index (known: {known})")
        vectors = _float_matrix(vectors, "gallery vectors")
        ids = check_ids(ids, len(vectors))
        norms = np.linalg.norm(vectors, axis=1)
        off = np.flatnonzero(np.abs(norms - 1) > _NORM_TOLERANCE)
        if off.size:
            raise CirError(
                f"vector {off[0]} (id {ids[off[0]]!r}) has norm {norms[off[0]]:.4f}: the dense index expects "
                "L2-normalised vectors (divide each by its norm)"
            )
        settings = {**_default_params(kind, len(vectors)), **{k: int(v) for k, v in params.items()}}
        if kind == "ivf" and not 1 <= settings["nlist"] <= max(1, len(vectors)):
            raise CirError(f"nlist={settings['nlist']}: {len(vectors)} vectors need between 1 and {len(vectors)} cells")
        _set_threads(threads)
        index = _make_index(kind, vectors.shape[1], settings)
        if kind == "ivf":
            index.train(vectors)
        index.add(vectors)
        return cls(index, ids, kind, settings, device, threads)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def nbytes(self) -> int:
        return _index_nbytes(self.index, self.kind)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The k best images per query: scores (n, min(k, ntotal)) float32, best first, and their ids."""
        queries = _float_matrix(queries, "queries")
        if queries.shape[1] != self.dim:
            raise CirError(f"queries have {queries.shape[1]} dimensions but the index holds {self.dim}")
        k = min(int(k), self.ntotal)
        if k <= 0 or len(queries) == 0:
            return np.zeros((len(queries), max(k, 0)), np.float32), [[] for _ in range(len(queries))]
        _set_threads(self.threads)
        scores, rows = (self._search_index if k <= _GPU_MAX_K else self.index).search(queries, k)
        short = np.flatnonzero((rows < 0).any(axis=1))
        if short.size:
            scores[short], rows[short] = self._exhaustive_search(queries[short], k)
        return label_results(scores, rows, self.ids)

    def _exhaustive_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact results for queries an approximate index left short of k."""
        log.debug("%d queries short of %d results: completing them exactly", len(queries), k)
        if self.kind == "ivf":
            return self.index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=self.index.nlist))
        if self.kind == "hnsw":
            return faiss.downcast_index(self.index.storage).search(queries, k)
        return self.index.search(queries, k)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder `path`: index.faiss, ids.json, settings.json (replacing any older index at once)."""
        with atomic_directory(path) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            write_json(tmp / "ids.json", self.ids, indent=None)
            write_json(tmp / "settings.json", {"format": FORMAT_VERSION, "kind": self.kind, "params": self.params,
                                               "dim": self.dim, "ntotal": self.ntotal})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", threads: int | None = None) -> "DenseIndex":
        """Read a folder written by save()."""
        path = Path(path)
        settings = read_index_settings(path, "dense index")
        if not (path / "index.faiss").is_file():
            raise DatasetNotFoundError(f"dense index file not found: {path / 'index.faiss'}")
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as exc:
            raise FormatError(f"{path / 'index.faiss'}: not a readable faiss index ({exc})") from exc
        if index.ntotal != settings.get("ntotal") or index.d != settings.get("dim"):
            raise FormatError(f"{path}: index.faiss does not match settings.json (size or dimension differs)")
        return cls(index, read_ids(path, index.ntotal), settings["kind"], settings["params"], device, threads)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        faiss.omp_set_num_threads(int(threads))
