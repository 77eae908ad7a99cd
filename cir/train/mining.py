"""Stage one's work done once for training: every image's ViT tokens, every query's z_t, and mined negatives."""

from __future__ import annotations

import numpy as np
import torch

from .data import TripletData


@torch.inference_mode()
def precompute_stage_one(model, data: TripletData, batch_size: int = 256):
    """Stage-one ViT tokens and embeddings of every image; z_t, ids, mask and embedding of every query."""
    from tqdm.auto import tqdm

    stage1 = model.stage1
    tokens, image_emb = [], []
    for start in tqdm(range(0, len(data.pixels), batch_size), desc="stage-one image tokens", unit="batch"):
        t = stage1.image_tokens(data.pixels[start : start + batch_size].float())
        tokens.append(t.half())
        image_emb.append(stage1.image_embedding(t))
    tokens_all = torch.cat(tokens)
    ids, mask = model.tokenizer([q.text for q in data.queries])
    fused, query_emb = [], []
    for start in tqdm(range(0, len(ids), batch_size), desc="stage-one query tokens", unit="batch"):
        rows = torch.from_numpy(data.ref_rows[start : start + batch_size])
        f = stage1.fuse(tokens_all[rows].float(), ids[start : start + batch_size], mask[start : start + batch_size])
        fused.append(f.half())
        query_emb.append(stage1.query_embedding(f))
    return tokens_all, torch.cat(image_emb), torch.cat(fused), ids, mask, torch.cat(query_emb)


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
