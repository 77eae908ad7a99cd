"""Stage one's work done once for training: every image's ViT tokens, every query's z_t, and mined negatives."""

from __future__ import annotations

import numpy as np
import torch

from .data import TripletData


class ImageTokens:
    """One tower's ViT tokens of every training image, from the feature cache (memory-mapped) or encoded in memory
    when there is no cache; rows are read as float32 tensors on demand."""

    def __init__(self, array: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.array = array
        self.device = device

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows) -> torch.Tensor:
        rows = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows
        return torch.from_numpy(np.asarray(self.array[rows], dtype=np.float32)).to(self.device)


def tower_tokens(model, tower: str, data: TripletData, cache=None, batch_size: int = 64) -> tuple[ImageTokens, np.ndarray | None]:
    """A frozen tower's tokens (and, for stage one, embeddings) of every training image, computed once: with a
    feature cache they are written to disk once and memory-mapped after, so memory does not follow the image count."""
    from ..stages.encoding import TowerEncoder

    features = TowerEncoder(model, tower, cache, batch_size).index(data.images())
    embeddings = np.asarray(features["embeddings"], dtype=np.float32) if "embeddings" in features.arrays else None
    return ImageTokens(features["tokens"], model.device), embeddings


@torch.inference_mode()
def precompute_stage_one(model, data: TripletData, cache=None, batch_size: int = 256):
    """Stage-one ViT tokens and embeddings of every image; z_t, ids, mask and embedding of every query."""
    from tqdm.auto import tqdm

    stage1 = model.stage1
    tokens, image_emb = tower_tokens(model, "stage1", data, cache)
    ids, mask = model.tokenizer([q.text for q in data.queries])
    ids, mask = ids.to(model.device), mask.to(model.device)
    fused, query_emb = [], []
    for start in tqdm(range(0, len(ids), batch_size), desc="stage-one query tokens", unit="batch"):
        f = stage1.fuse(tokens[data.ref_rows[start : start + batch_size]], ids[start : start + batch_size],
                        mask[start : start + batch_size])
        fused.append(f.half())
        query_emb.append(stage1.query_embedding(f))
    return tokens, torch.from_numpy(image_emb).to(model.device), torch.cat(fused), ids, mask, torch.cat(query_emb)


def mine_negatives(query_emb: torch.Tensor, image_emb: torch.Tensor, data: TripletData, depth: int) -> np.ndarray:
    """Per query, stage one's top `depth` images that are neither its reference nor its target."""
    mined = np.zeros((len(query_emb), depth), dtype=np.int64)
    for start in range(0, len(query_emb), 1024):
        sims = query_emb[start : start + 1024] @ image_emb.t()
        rows = np.arange(start, min(start + 1024, len(query_emb)))
        sims[torch.arange(len(rows)), torch.from_numpy(data.ref_rows[rows])] = -2
        sims[torch.arange(len(rows)), torch.from_numpy(data.target_rows[rows])] = -2
        mined[rows] = sims.topk(depth, dim=1).indices.numpy()
    return mined
