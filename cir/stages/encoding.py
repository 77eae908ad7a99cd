"""Image and query encoding shared by both stages: one ViT tower, its gallery cache, and reference lookup.

A reference given as a gallery id reuses the cached tokens; a reference given as a path is encoded on the fly.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..cache import CachedFeatures, FeatureCache, encode_gallery
from ..errors import UnknownIdError
from ..types import Gallery, Query, open_image

log = logging.getLogger(__name__)


def module_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's weights: the cache key changes whenever the weights do."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TowerEncoder:
    """One image tower of a CirModel ("stage1", or "stage2" when stage two has its own ViT) with its cache.

    It runs where the model is and at the model's precision (`model.autocast_bf16`)."""

    def __init__(self, model, tower: str = "stage1", cache: FeatureCache | None = None, batch_size: int = 64) -> None:
        self.model = model
        self.tower = tower
        self.module = getattr(model, tower)
        self.cache = cache
        self.batch_size = batch_size
        self.device = model.device
        self.autocast_bf16 = model.autocast_bf16
        self.features: CachedFeatures | None = None
        precision = "bf16" if self.autocast_bf16 else "fp32"
        self.key = f"{model.config.name}-{tower}-{precision}-{module_fingerprint(self.module)}"

    def autocast(self):
        if not self.autocast_bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @torch.inference_mode()
    def encode_images(self, images: list) -> dict[str, np.ndarray]:
        pixels = self.model.preprocess(images).to(self.device)
        with self.autocast():
            tokens = self.module.image_tokens(pixels)
            out = {"tokens": tokens.float().cpu().numpy().astype(np.float16)}
            if self.tower == "stage1":
                emb = self.module.image_embedding(tokens)
                out["embeddings"] = emb.float().cpu().numpy().astype(np.float16)
        return out

    def index(self, gallery: Gallery) -> CachedFeatures:
        """Gallery features from the cache (encoding only on a miss)."""
        desc = f"encoding gallery ({self.tower})"
        if self.cache is None:
            arrays = encode_gallery(gallery, self.encode_images, self.batch_size, desc)
            self.features = CachedFeatures(list(gallery.ids), arrays, len(gallery))
        else:
            self.features = self.cache.get(self.key, gallery, self.encode_images, self.batch_size, desc)
        return self.features

    def tokens(self, image_refs: Sequence[str]) -> torch.Tensor:
        """(B, N, W) float tokens for gallery ids or image paths."""
        if self.features is not None and all(ref in self.features for ref in image_refs):
            rows = self.features.rows(image_refs)
            return torch.from_numpy(np.asarray(self.features["tokens"][rows], dtype=np.float32)).to(self.device)
        out: list[torch.Tensor] = []
        for ref in image_refs:
            if self.features is not None and ref in self.features:
                row = self.features.rows([ref])[0]
                out.append(torch.from_numpy(np.asarray(self.features["tokens"][row], dtype=np.float32)))
            elif Path(ref).is_file():
                out.append(torch.from_numpy(self.encode_images([open_image(ref)])["tokens"][0].astype(np.float32)))
            else:
                raise UnknownIdError(f"reference {ref!r} is neither an id of the indexed gallery nor an image file")
        return torch.stack(out).to(self.device)


def batches(queries: Sequence[Query], size: int):
    for start in range(0, len(queries), size):
        yield queries[start : start + size]


def progress(items: Iterable, count: int, per_item: int, desc: str) -> Iterable:
    """A progress bar over a stage's query batches (`count` queries, `per_item` a batch), shown for long runs only."""
    from tqdm.auto import tqdm

    return tqdm(items, total=-(-count // per_item), desc=desc, unit="batch" if per_item > 1 else "query",
                disable=count < 200, leave=False)
