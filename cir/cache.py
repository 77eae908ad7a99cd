"""The gallery feature cache: per-image arrays (global embeddings, patch tokens) computed once, memory-mapped after.

An entry is keyed by the encoder (model name + checkpoint hash + which tower) and the gallery (ids, paths, file sizes
and modification times), so it is rebuilt exactly when either changes. Arrays are stored as fp16 `.npy` files and
opened with `mmap_mode="r"`: a query never encodes a gallery image, and a large gallery need not fit in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .io import atomic_directory
from .types import Gallery

log = logging.getLogger(__name__)

# encode(images) -> {array name: (batch, ...) array}
BatchEncoder = Callable[[list], dict[str, np.ndarray]]


@dataclass
class CachedFeatures:
    """One gallery's cached arrays, row i belonging to `ids[i]`."""

    ids: list[str]
    arrays: dict[str, np.ndarray]
    encoded: int  # images encoded to produce this entry: 0 on a cache hit

    def __post_init__(self) -> None:
        self._rows = {image_id: i for i, image_id in enumerate(self.ids)}

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        from .errors import UnknownIdError

        try:
            return np.fromiter((self._rows[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise UnknownIdError(f"image id {exc.args[0]!r} is not in the indexed gallery") from None

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._rows

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def gallery_fingerprint(gallery: Gallery) -> str:
    """Hash of the gallery's ids, paths and file stats: any added, removed or rewritten image changes it."""
    h = hashlib.sha256()
    for image_id in gallery.ids:
        path = gallery.path(image_id)
        try:
            st = os.stat(path)
            stat = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stat = "missing"
        h.update(f"{image_id}\t{path}\t{stat}\n".encode())
    return h.hexdigest()[:16]


class FeatureCache:
    """A folder of cache entries, `<root>/<encoder key>/<gallery fingerprint>/`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def entry_dir(self, encoder_key: str, gallery: Gallery) -> Path:
        return self.root / encoder_key / gallery_fingerprint(gallery)

    def get(
        self,
        encoder_key: str,
        gallery: Gallery,
        encode: BatchEncoder,
        batch_size: int = 64,
        desc: str = "encoding gallery",
    ) -> CachedFeatures:
        """Return the cached features, encoding the gallery first if no valid entry exists."""
        entry = self.entry_dir(encoder_key, gallery)
        cached = _open_entry(entry, gallery.ids)
        if cached is not None:
            log.info("gallery features: cache hit at %s (0 images encoded)", entry)
            return cached
        log.info("gallery features: encoding %d images into %s", len(gallery), entry)
        _build_entry(entry, gallery, encode, batch_size, desc)
        cached = _open_entry(entry, gallery.ids)
        assert cached is not None
        cached.encoded = len(gallery)
        return cached


def _open_entry(entry: Path, ids: list[str]) -> CachedFeatures | None:
    manifest = entry / "manifest.json"
    if not manifest.is_file():
        return None
    meta = json.loads(manifest.read_text())
    if meta.get("ids") != ids:
        return None
    arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    return CachedFeatures(ids, arrays, encoded=0)


def encode_gallery(
    gallery: Gallery,
    encode: BatchEncoder,
    batch_size: int = 64,
    desc: str = "encoding gallery",
    allocate: Callable[[str, tuple[int, ...]], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Encode every gallery image in batches into fp16 arrays, one row per image, with a progress bar.

    `allocate(name, shape)` makes each output array (in memory by default; the cache passes memory-mapped files).
    """
    from tqdm.auto import tqdm

    allocate = allocate or (lambda name, shape: np.empty(shape, dtype=np.float16))
    outputs: dict[str, np.ndarray] = {}
    n = len(gallery)
    with tqdm(total=n, desc=desc, unit="img", disable=n < 2 * batch_size) as bar:
        for start in range(0, n, batch_size):
            batch_ids = gallery.ids[start : start + batch_size]
            for name, values in encode([gallery.load(i) for i in batch_ids]).items():
                if name not in outputs:
                    outputs[name] = allocate(name, (n, *values.shape[1:]))
                outputs[name][start : start + len(batch_ids)] = values
            bar.update(len(batch_ids))
    return outputs


def _build_entry(entry: Path, gallery: Gallery, encode: BatchEncoder, batch_size: int, desc: str) -> None:
    with atomic_directory(entry) as tmp:

        def allocate(name: str, shape: tuple[int, ...]) -> np.ndarray:
            return np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.float16, shape=shape)

        outputs = encode_gallery(gallery, encode, batch_size, desc, allocate)
        for array in outputs.values():
            array.flush()
        (tmp / "manifest.json").write_text(json.dumps({"ids": gallery.ids, "arrays": sorted(outputs)}))
