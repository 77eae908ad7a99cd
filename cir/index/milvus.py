"""Milvus stage-one backend: a gallery's dense and / or sparse vectors in one Milvus collection.

Embedded by default (milvus-lite, a folder under the cache), a standalone server or a cluster by URI
(`index_params.uri: http://host:19530`, `token: user:password`). One collection per (encoder, sparse head,
gallery name) holds the rows `id` (primary key), `digest` (a hash of the row's vectors), `dense` (FLOAT_VECTOR,
inner product) and / or `sparse` (SPARSE_FLOAT_VECTOR, inner product). Its properties record the weights that made
it (encoder key with precision, sparse head hash) and the gallery fingerprint of the last complete ingestion, so
that a collection of other weights is refused and a current one costs nothing to reopen.

Ingestion reads the feature cache (never re-encodes, never writes it) and is idempotent: it lists the collection's
(id, digest) pairs, deletes rows the gallery no longer holds or whose vectors changed, and inserts only what is
absent, in batches with a progress bar. An interrupted ingestion therefore ends, on the next run, with exactly the
gallery; a changed gallery updates only the difference.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np
import scipy.sparse as sp

from ..errors import CirError, require
from .dense_faiss import check_ids, label_results
from .sparse import gallery_matrix

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
DENSE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")
SPARSE_INDEX_TYPES = ("SPARSE_INVERTED_INDEX",)
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
FUSIONS = ("weighted", "rrf")
_ID_MAX_LENGTH = 1024
_SEARCH_BATCH = 256  # queries per search call (fewer when k is large: at most _SEARCH_RESULTS results a call)
_SEARCH_RESULTS = 100_000
_PROP = "cir."  # prefix of the collection properties cir writes

# progress(done, total) after each inserted batch: a hook for progress reporting (and for tests, to interrupt).
Progress = Callable[[int, int], None]


@dataclass
class MilvusSettings:
    """`index_params` of a stage-one section with `index: milvus` (every key optional).

    uri: a local path (milvus-lite; default `<cache>/milvus/gallery.db`) or `http(s)://host:port` (server, cluster).
    token: `user:password` or an API key (`env:NAME` reads it from the environment variable NAME, keeping it out of
    the config). collection: the collection's name (default: derived from the encoder key,
    the sparse head and the gallery's name). index_type / params / search: the dense field's index (FLAT, IVF_FLAT,
    HNSW), its build parameters (nlist; M, efConstruction) and search parameters (nprobe; ef). sparse_index_type /
    sparse_params / sparse_search: the same for the sparse field. consistency_level: Strong (default), Bounded,
    Session, Eventually. rebuild: drop the collection and ingest again. batch_size: rows per insert. timeout: seconds
    to connect (an unreachable uri fails within it). call_timeout: seconds any one call may take.
    """

    uri: str | None = None
    token: str = ""
    collection: str | None = None
    index_type: str = "FLAT"
    params: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    sparse_index_type: str = "SPARSE_INVERTED_INDEX"
    sparse_params: dict[str, Any] = field(default_factory=dict)
    sparse_search: dict[str, Any] = field(default_factory=dict)
    consistency_level: str = "Strong"
    rebuild: bool = False
    batch_size: int = 1000
    timeout: float = 10.0
    call_timeout: float = 600.0

    @classmethod
    def parse(cls, params: dict[str, Any] | None) -> "MilvusSettings":
        """Settings from a config's `index_params`, refusing unknown keys and bad values in one line."""
        params = dict(params or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise CirError(f"unknown milvus index setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
        settings = cls(**params)
        settings.index_type = str(settings.index_type).upper()
        settings.sparse_index_type = str(settings.sparse_index_type).upper()
        if settings.index_type not in DENSE_INDEX_TYPES:
            raise CirError(f"milvus index_type {settings.index_type!r} is not one of {', '.join(DENSE_INDEX_TYPES)}")
        if settings.sparse_index_type not in SPARSE_INDEX_TYPES:
            raise CirError(f"milvus sparse_index_type {settings.sparse_index_type!r} is not one of "
                           f"{', '.join(SPARSE_INDEX_TYPES)}")
        if settings.consistency_level not in CONSISTENCY_LEVELS:
            raise CirError(f"milvus consistency_level {settings.consistency_level!r} is not one of "
                           f"{', '.join(CONSISTENCY_LEVELS)}")
        if int(settings.batch_size) < 1 or float(settings.timeout) <= 0 or float(settings.call_timeout) <= 0:
            raise CirError("milvus batch_size must be at least 1, timeout and call_timeout positive")
        token = str(settings.token or "")
        if token.startswith("env:"):
            if token[4:] not in os.environ:
                raise CirError(f"milvus token {token!r}: the environment variable {token[4:]} is not set")
            token = os.environ[token[4:]]
        settings.token = token
        for name in ("params", "search", "sparse_params", "sparse_search"):
            if not isinstance(getattr(settings, name), dict):
                raise CirError(f"milvus index setting {name} must be a mapping, got {getattr(settings, name)!r}")
        return settings

    def with_defaults(self, cache_root: str | os.PathLike | None, default_collection: str) -> "MilvusSettings":
        """A copy whose uri and collection are filled in (milvus-lite under the cache folder; a derived name)."""
        uri = self.uri or str(Path(cache_root or ".cir-cache") / "milvus" / "gallery.db")
        return MilvusSettings(**{**self.__dict__, "uri": uri, "collection": self.collection or default_collection})


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https", "tcp", "grpc", "unix")


_clients: dict[tuple[str, str], Any] = {}
# pymilvus pings every 10 s, idle or not. milvus-lite's gRPC server (C-core defaults) accepts a ping only once in
# 5 minutes while no data flows, and after two early pings answers GOAWAY "too_many_pings": a long call (a sparse
# search of a million images) is then retried until it times out. Pinging every 5 minutes still drew GOAWAYs (a
# ping a little early is a strike), so the local engine, which cannot drop off a network, is pinged once in 10
# minutes and never between calls. A server or cluster keeps pymilvus's pings, which its own policy accepts and
# which tell a dead connection early.
_LITE_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 600_000, "grpc.keepalive_timeout_ms": 20_000,
                      "grpc.keepalive_permit_without_calls": 0}


def connect(uri: str, token: str = "", timeout: float = 10.0):
    """A MilvusClient for `uri` (one per process and URI: milvus-lite opens a local database once)."""
    pymilvus = require("pymilvus", "milvus", "pymilvus")
    key = (uri if is_remote(uri) else str(Path(uri).resolve()), token)
    if key in _clients:
        return _clients[key]
    if not is_remote(uri):
        require("milvus_lite", "milvus", "milvus-lite")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        options = {} if is_remote(uri) else {"grpc_options": _LITE_GRPC_OPTIONS}
        client = pymilvus.MilvusClient(uri=uri, token=token, timeout=timeout, **options)
    except Exception as exc:  # pymilvus raises MilvusException, grpc errors, or plain exceptions for bad URIs
        raise CirError(f"cannot reach Milvus at {uri}: {_reason(exc)}") from None
    _clients[key] = client
    return client


def close_clients() -> None:
    """Close every client this process opened (milvus-lite releases its database)."""
    while _clients:
        _, client = _clients.popitem()
        try:
            client.close()
        except Exception:  # closing a dead connection must not hide the caller's own error
            log.debug("closing a Milvus client failed", exc_info=True)


def _reason(exc: BaseException) -> str:
    """One line: the error's message, and the first cause that says more (milvus-lite's lock, a refused port)."""
    parts, seen = [], exc
    for _ in range(6):  # a cause chain can loop back on itself
        if seen is None or len(parts) == 3:
            break
        text = " ".join(str(getattr(seen, "message", None) or seen or type(seen).__name__).split())
        if text and text not in parts:
            parts.append(text)
        seen = seen.__cause__ or seen.__context__
    return ": ".join(parts)


@contextmanager
def _milvus_errors(what: str) -> Iterator[None]:
    """Turn an engine error into a one-line CirError naming what was being done (collection and URI)."""
    try:
        yield
    except CirError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("pymilvus", "grpc", "milvus_lite")):
            raise CirError(f"{what}: {_reason(exc)}") from None
        raise


@contextmanager
def _quiet_lite_server(uri: str) -> Iterator[None]:
    """milvus-lite's server logs a traceback for a timestamp call pymilvus makes while waiting for an index (which it
    does not implement, harmlessly): keep that out of the user's log."""
    server_log = logging.getLogger("grpc._server")
    level = server_log.level
    if not is_remote(uri):
        server_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        server_log.setLevel(level)


def collection_name(*parts: str) -> str:
    """A valid collection name (letters, digits, underscores) derived from `parts`."""
    return "cir_" + hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


@dataclass
class GalleryVectors:
    """What one collection holds per image: ids, dense vectors (n, d) float32 and / or sparse rows (CSR)."""

    ids: list[str]
    dense: np.ndarray | None = None
    sparse: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        if self.dense is None and self.sparse is None:
            raise CirError("a Milvus collection needs dense or sparse vectors (got neither)")
        if self.dense is not None:
            self.dense = np.ascontiguousarray(self.dense, dtype=np.float32)
            if self.dense.ndim != 2 or not np.isfinite(self.dense).all():
                raise CirError(f"dense gallery vectors must be a finite 2-D array, got shape {self.dense.shape}")
        if self.sparse is not None:
            # Checked as the in-process sparse index checks them, and rounded to the float16 weights it stores, so
            # that both backends score alike (the feature cache holds fp16 embeddings: no information is lost).
            self.sparse = gallery_matrix(self.sparse)
            self.sparse.data = self.sparse.data.astype(np.float16).astype(np.float32)
            self.sparse.eliminate_zeros()
        n = len(self.dense) if self.dense is not None else self.sparse.shape[0]
        if self.dense is not None and self.sparse is not None and self.sparse.shape[0] != n:
            raise CirError(f"{n} dense but {self.sparse.shape[0]} sparse gallery rows")
        self.ids = check_ids(self.ids, n)

    @property
    def layout(self) -> str:
        """The fields, as the collection records them: "dense:128", "sparse" or "dense:128,sparse"."""
        parts = [f"dense:{self.dense.shape[1]}"] if self.dense is not None else []
        return ",".join(parts + (["sparse"] if self.sparse is not None else []))

    def digests(self) -> list[str]:
        """A short hash of each row's vectors: a row whose vectors changed is replaced."""
        out = []
        for i in range(len(self.ids)):
            h = hashlib.blake2b(digest_size=8)
            if self.dense is not None:
                h.update(self.dense[i].tobytes())
            if self.sparse is not None:
                lo, hi = self.sparse.indptr[i], self.sparse.indptr[i + 1]
                h.update(self.sparse.indices[lo:hi].astype(np.int64).tobytes())
                h.update(self.sparse.data[lo:hi].tobytes())
            out.append(h.hexdigest())
        return out

    def rows(self, positions: Sequence[int], digests: Sequence[str]) -> list[dict[str, Any]]:
        """Insertable rows for the given gallery positions."""
        out = []
        for p in positions:
            row: dict[str, Any] = {"id": self.ids[p], "digest": digests[p]}
            if self.dense is not None:
                row["dense"] = self.dense[p].tolist()
            if self.sparse is not None:
                row["sparse"] = sparse_row(self.sparse, p)
            out.append(row)
        return out


def sparse_row(matrix: sp.csr_matrix, i: int) -> dict[int, float]:
    """Row i of a CSR matrix as Milvus's sparse vector: {term: weight}."""
    lo, hi = matrix.indptr[i], matrix.indptr[i + 1]
    return dict(zip(matrix.indices[lo:hi].tolist(), matrix.data[lo:hi].tolist()))


def _layout_fields(layout: str) -> dict[str, int | None]:
    """"dense:128,sparse" -> {"dense": 128, "sparse": None}."""
    out: dict[str, int | None] = {}
    for part in filter(None, layout.split(",")):
        name, _, dim = part.partition(":")
        out[name] = int(dim) if dim else None
    return out


def folder_bytes(path: Path) -> int:
    """Bytes of the files under a folder (or one file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class MilvusIndex:
    """A gallery's collection in Milvus: `sync()` (ingest) or `open()`, then `search()` / `hybrid_search()`.

    Searches return what DenseIndex / SparseIndex return: scores (n, min(k, ntotal)) float32, best first, and ids.
    """

    def __init__(self, client: Any, settings: MilvusSettings, layout: str, ntotal: int) -> None:
        self.client = client
        self.settings = settings
        self.name = settings.collection
        self.uri = settings.uri
        self.layout = layout
        self.fields = _layout_fields(layout)
        self.ntotal = ntotal
        self.kind = "milvus"

    @property
    def params(self) -> dict[str, Any]:
        """The index type and build / search parameters of each vector field the collection has."""
        s, out = self.settings, {}
        if "dense" in self.fields or not self.fields:
            out.update({"index_type": s.index_type, **s.params, **s.search})
        if "sparse" in self.fields:
            out.update({"sparse_index_type": s.sparse_index_type, **{f"sparse_{k}": v for k, v in
                                                                    {**s.sparse_params, **s.sparse_search}.items()}})
        return out

    @property
    def where(self) -> str:
        return f"Milvus collection {self.name!r} at {self.uri}"

    # -- ingestion ---------------------------------------------------------------------------------------------
    @classmethod
    def sync(
        cls,
        vectors: GalleryVectors,
        settings: MilvusSettings,
        metadata: dict[str, str],
        fingerprint: str,
        progress: Progress | None = None,
    ) -> "MilvusIndex":
        """Make the collection hold exactly `vectors`, inserting only what is absent.

        `metadata`: what made the vectors ({"encoder": key, "precision": ..., "sparse_head": ...}); a collection
        recording other values is refused. `fingerprint`: the gallery's (cir.cache.gallery_fingerprint), recorded
        once the collection holds the whole gallery.
        """
        client = connect(settings.uri, settings.token, settings.timeout)
        index = cls(client, settings, vectors.layout, 0)
        with _milvus_errors(f"ingesting into {index.where}"):
            expected = {**metadata, "layout": vectors.layout}
            if settings.rebuild and client.has_collection(index.name, timeout=settings.call_timeout):
                log.info("rebuilding %s", index.where)
                client.drop_collection(index.name, timeout=settings.call_timeout)
            if client.has_collection(index.name, timeout=settings.call_timeout):
                recorded = index._properties()
                index._check(recorded, expected)
                index._load()  # a collection from an earlier process (or an interrupted one) may be released
                if recorded.get(_PROP + "gallery") == fingerprint and index._count() == len(vectors.ids):
                    log.info("%s is current (%d images): nothing to insert", index.where, len(vectors.ids))
                    index.ntotal = len(vectors.ids)
                    return index
            else:
                index._create(vectors, expected)
            index._set_property("gallery", "")  # until the collection holds the whole gallery
            index._update(vectors, progress)
            index._set_property("gallery", fingerprint)
            index.ntotal = index._count()
        if index.ntotal != len(vectors.ids):
            raise CirError(f"{index.where} holds {index.ntotal} rows after ingesting {len(vectors.ids)} images: "
                           "another writer may be changing it")
        return index

    @classmethod
    def open(cls, settings: MilvusSettings, layout: str | None = None, metadata: dict[str, str] | None = None) -> "MilvusIndex":
        """Attach to an existing collection (built by `cir index` here or elsewhere), checking what made it."""
        client = connect(settings.uri, settings.token, settings.timeout)
        index = cls(client, settings, layout or "", 0)
        with _milvus_errors(f"opening {index.where}"):
            if not client.has_collection(index.name, timeout=settings.call_timeout):
                raise CirError(f"{index.where} does not exist: build it first with `cir index --config <your config>`")
            recorded = index._properties()
            index._check(recorded, {**(metadata or {}), **({"layout": layout} if layout else {})})
            index.layout = recorded[_PROP + "layout"]
            index.fields = _layout_fields(index.layout)
            if not recorded.get(_PROP + "gallery"):
                raise CirError(f"{index.where} holds an unfinished ingestion: run `cir index --config <your config>` "
                               "again to complete it")
            index._load()
            index.ntotal = index._count()
        return index

    def _load(self) -> None:
        """Load the collection for search (a no-op when it is loaded)."""
        self.client.load_collection(self.name, timeout=self.settings.call_timeout)

    def _create(self, vectors: GalleryVectors, recorded: dict[str, str]) -> None:
        from pymilvus import DataType

        c, s = self.client, self.settings
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_ID_MAX_LENGTH)
        schema.add_field("digest", DataType.VARCHAR, max_length=32)
        index_params = c.prepare_index_params()
        if vectors.dense is not None:
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=int(vectors.dense.shape[1]))
            index_params.add_index(field_name="dense", index_type=s.index_type, metric_type="IP", params=dict(s.params))
        if vectors.sparse is not None:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            index_params.add_index(field_name="sparse", index_type=s.sparse_index_type, metric_type="IP",
                                   params=dict(s.sparse_params))
        properties = {_PROP + "format": FORMAT_VERSION, _PROP + "gallery": "",
                      **{_PROP + k: str(v) for k, v in recorded.items()}}
        with _quiet_lite_server(self.uri):
            c.create_collection(self.name, schema=schema, index_params=index_params, properties=properties,
                                consistency_level=s.consistency_level, timeout=s.call_timeout)
        log.info("created %s (%s, %s)", self.where, vectors.layout, s.index_type)

    def _properties(self) -> dict[str, str]:
        info = self.client.describe_collection(self.name, timeout=self.settings.call_timeout)
        properties = {str(k): str(v) for k, v in (info.get("properties") or {}).items()}
        if properties.get(_PROP + "format") != FORMAT_VERSION:
            raise CirError(f"{self.where} was not made by cir (no {_PROP}format {FORMAT_VERSION} property): give "
                           "index_params.collection another name, or drop it")
        return properties

    def _check(self, recorded: dict[str, str], expected: dict[str, str]) -> None:
        """Refuse a collection made by other weights, or of another dimension or kind."""
        for key, value in expected.items():
            have = recorded.get(_PROP + key)
            if have == str(value):
                continue
            if key == "layout":
                raise CirError(f"{self.where} holds fields {have!r}, not the {value!r} this stage needs (wrong "
                               "dimension or kind): give index_params.collection another name, or set "
                               "index_params.rebuild: true")
            raise CirError(f"{self.where} was built by {key} {have!r}, not {value!r}: rebuild it with "
                           "index_params.rebuild: true (or drop the collection)")

    def _set_property(self, key: str, value: str) -> None:
        self.client.alter_collection_properties(self.name, properties={_PROP + key: value},
                                                timeout=self.settings.call_timeout)

    def _count(self) -> int:
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"], timeout=self.settings.call_timeout,
                                 consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def stored_digests(self) -> list[tuple[str, str]]:
        """Every (id, digest) row the collection holds, duplicates included."""
        if not is_remote(self.uri):  # milvus-lite answers one query of any size (and lacks the iterator's timestamps)
            rows = self.client.query(self.name, filter="", output_fields=["id", "digest"], limit=max(1, self._count()),
                                     timeout=self.settings.call_timeout, consistency_level="Strong")
            return [(row["id"], row["digest"]) for row in rows]
        iterator = self.client.query_iterator(self.name, batch_size=max(1000, self.settings.batch_size),
                                              output_fields=["id", "digest"], timeout=self.settings.call_timeout,
                                              consistency_level="Strong")
        out: list[tuple[str, str]] = []
        try:
            while batch := iterator.next():
                out.extend((row["id"], row["digest"]) for row in batch)
        finally:
            iterator.close()
        return out

    def _update(self, vectors: GalleryVectors, progress: Progress | None) -> None:
        """Delete what the gallery no longer holds (or holds changed), insert what is absent."""
        from tqdm.auto import tqdm

        digests = vectors.digests()
        wanted = dict(zip(vectors.ids, digests))
        stored = self.stored_digests() if self._count() else []
        counts = Counter(i for i, _ in stored)
        stale = sorted({i for i, d in stored if wanted.get(i) != d or counts[i] > 1})
        present = {i for i, _ in stored} - set(stale)
        missing = [p for p, i in enumerate(vectors.ids) if i not in present]
        log.info("%s: %d rows kept, %d deleted, %d to insert", self.where, len(present), len(stale), len(missing))
        s = self.settings
        for start in range(0, len(stale), s.batch_size):
            self.client.delete(self.name, ids=stale[start : start + s.batch_size], timeout=s.call_timeout)
        done = 0
        with tqdm(total=len(missing), desc=f"milvus insert ({self.name})", unit="img",
                  disable=len(missing) < 2 * s.batch_size, leave=False) as bar:
            for start in range(0, len(missing), s.batch_size):
                batch = missing[start : start + s.batch_size]
                self.client.insert(self.name, vectors.rows(batch, digests), timeout=s.call_timeout)
                done += len(batch)
                bar.update(len(batch))
                if progress is not None:
                    progress(done, len(missing))
        self.client.flush(self.name, timeout=s.call_timeout)

    def drop(self) -> None:
        with _milvus_errors(f"dropping {self.where}"):
            self.client.drop_collection(self.name, timeout=self.settings.call_timeout)

    @property
    def nbytes(self) -> int:
        """Bytes on disk of a milvus-lite database (the whole database folder); 0 for a server."""
        if is_remote(self.uri):
            return 0
        path = Path(self.uri)
        return folder_bytes(path) if path.exists() else 0

    # -- search ------------------------------------------------------------------------------------------------
    def _field_for(self, queries: Any) -> str:
        name = "sparse" if sp.issparse(queries) else "dense"
        if name not in self.fields:
            raise CirError(f"{self.where} has no {name} field (it holds {self.layout}): wrong kind of collection")
        if name == "dense":
            dim = np.asarray(queries).shape[1] if np.ndim(queries) == 2 else None
            if dim != self.fields["dense"]:
                raise CirError(f"queries have {dim} dimensions but {self.where} holds {self.fields['dense']}")
        return name

    def _request_data(self, field_name: str, queries: Any, rows: range) -> list:
        if field_name == "sparse":
            queries = sp.csr_matrix(queries, dtype=np.float32)
            return [sparse_row(queries, i) for i in rows]
        return np.ascontiguousarray(queries[rows.start : rows.stop], dtype=np.float32).tolist()

    def _search_params(self, field_name: str) -> dict[str, Any]:
        params = self.settings.sparse_search if field_name == "sparse" else self.settings.search
        return {"metric_type": "IP", "params": dict(params)}

    def search(self, queries: Any, k: int, search_params: dict[str, Any] | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """The k best images per query row (dense: an (n, d) array; sparse: a CSR matrix), on the matching field.

        `search_params` overrides the configured search parameters (nprobe, ef) for this call.
        """
        field_name = self._field_for(queries)
        n = queries.shape[0]
        k = min(int(k), self.ntotal)
        if k <= 0 or n == 0:
            return np.zeros((n, max(k, 0)), np.float32), [[] for _ in range(n)]
        params = self._search_params(field_name)
        if search_params:
            params["params"].update(search_params)
        hits: list[list[dict]] = []
        with _milvus_errors(f"searching {self.where}"):
            step = max(1, min(_SEARCH_BATCH, _SEARCH_RESULTS // k))
            for start in range(0, n, step):
                rows = range(start, min(n, start + step))
                hits.extend(self.client.search(self.name, data=self._request_data(field_name, queries, rows),
                                               anns_field=field_name, limit=k, search_params=params,
                                               output_fields=["id"], timeout=self.settings.call_timeout,
                                               consistency_level=self.settings.consistency_level))
        return _results(hits, k)

    def hybrid_search(
        self,
        dense: np.ndarray,
        sparse: sp.csr_matrix,
        k: int,
        fusion: str = "weighted",
        weights: Sequence[float] = (0.5, 0.5),
        rrf_k: int = 60,
        candidates: int | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Both fields searched (each for `candidates` results, default k) and fused by Milvus's own ranker:
        `weighted` (weights[0] * norm(dense) + weights[1] * norm(sparse), norm(s) = 0.5 + arctan(s) / pi for inner
        products) or `rrf` (the sum of 1 / (rrf_k + rank), ranks from 1)."""
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        for part in (dense, sparse):
            self._field_for(part)
        if dense.shape[0] != sparse.shape[0]:
            raise CirError(f"{dense.shape[0]} dense but {sparse.shape[0]} sparse queries")
        ranker = fusion_ranker(fusion, weights, rrf_k)
        ranker = WeightedRanker(*ranker[1], norm_score=True) if ranker[0] == "weighted" else RRFRanker(ranker[1])
        n = dense.shape[0]
        k = min(int(k), self.ntotal)
        limit = min(max(k, int(candidates or k)), self.ntotal)
        if k <= 0 or n == 0:
            return np.zeros((n, max(k, 0)), np.float32), [[] for _ in range(n)]
        hits: list[list[dict]] = []
        with _milvus_errors(f"hybrid search of {self.where}"):
            step = max(1, min(_SEARCH_BATCH, _SEARCH_RESULTS // k))
            for start in range(0, n, step):
                rows = range(start, min(n, start + step))
                requests = [AnnSearchRequest(data=self._request_data(f, q, rows), anns_field=f,
                                             param=self._search_params(f), limit=limit)
                            for f, q in (("dense", dense), ("sparse", sparse))]
                hits.extend(self.client.hybrid_search(self.name, requests, ranker, limit=k, output_fields=["id"],
                                                      timeout=self.settings.call_timeout,
                                                      consistency_level=self.settings.consistency_level))
        return _results(hits, k)


def fusion_ranker(fusion: str, weights: Sequence[float], rrf_k: int) -> tuple[str, Any]:
    """("weighted", (w_dense, w_sparse)) or ("rrf", k), checked."""
    if fusion not in FUSIONS:
        raise CirError(f"unknown fusion {fusion!r} (known: {', '.join(FUSIONS)})")
    if fusion == "rrf":
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k <= 0:
            raise CirError(f"rrf_k must be a positive number, got {rrf_k!r}")
        return "rrf", int(rrf_k)
    weights = tuple(float(w) for w in weights)
    if len(weights) != 2 or not all(0 <= w <= 1 and math.isfinite(w) for w in weights):
        raise CirError(f"fusion_weights must be two numbers in [0, 1] (dense, sparse), got {list(weights)}")
    return "weighted", weights


def _results(hits: list[list[dict]], k: int) -> tuple[np.ndarray, list[list[str]]]:
    """Milvus hits as (scores (n, k) float32 with -inf where short, ids)."""
    scores = np.full((len(hits), k), -np.inf, np.float32)
    rows = np.full((len(hits), k), -1, np.int64)
    names: list[str] = []
    for q, found in enumerate(hits):
        for j, hit in enumerate(list(found)[:k]):
            scores[q, j] = hit["distance"]
            rows[q, j] = len(names)
            names.append(hit["id"] if "id" in hit else hit["entity"]["id"])
    return label_results(scores, rows, names)


# -- numpy reference of Milvus's fusion (what tests and `cir bench` compare hybrid search with) ----------------------
def fuse(
    dense: tuple[np.ndarray, list[list[str]]],
    sparse: tuple[np.ndarray, list[list[str]]],
    k: int,
    fusion: str = "weighted",
    weights: Sequence[float] = (0.5, 0.5),
    rrf_k: int = 60,
) -> list[list[tuple[str, float]]]:
    """Fuse two result lists per query as Milvus's ranker does: (id, fused score) pairs, best first, k at most."""
    kind, arg = fusion_ranker(fusion, weights, rrf_k)
    out = []
    for q in range(len(dense[1])):
        total: dict[str, float] = {}
        for route, (scores, ids) in enumerate((dense, sparse)):
            for rank, (image_id, score) in enumerate(zip(ids[q], scores[q])):
                if kind == "rrf":
                    part = 1.0 / (arg + rank + 1)
                else:
                    part = arg[route] * (0.5 + math.atan(float(score)) / math.pi)
                total[image_id] = total.get(image_id, 0.0) + part
        out.append(sorted(total.items(), key=lambda item: -item[1])[:k])
    return out


def for_gallery(
    vectors: GalleryVectors,
    gallery: Any,
    index_params: dict[str, Any] | None,
    cache_root: str | os.PathLike | None,
    encoder_key: str,
    precision: str,
    sparse_head: str = "",
    progress: Progress | None = None,
) -> MilvusIndex:
    """The collection of a stage's gallery vectors, ingested as needed: what `index: milvus` builds.

    The default collection name derives from the encoder key, the sparse head, the fields and the gallery's name
    (not its content), so a gallery that gains or loses images updates its own collection by the difference.
    """
    from ..cache import gallery_fingerprint

    settings = MilvusSettings.parse(index_params)
    metadata = {"encoder": encoder_key, "precision": precision, **({"sparse_head": sparse_head} if sparse_head else {})}
    default = collection_name(encoder_key, sparse_head, vectors.layout, getattr(gallery, "name", "gallery"))
    settings = settings.with_defaults(cache_root, default)
    return MilvusIndex.sync(vectors, settings, metadata, gallery_fingerprint(gallery), progress)
