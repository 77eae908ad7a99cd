"""Training dense stage one: in-batch contrastive loss between composed queries and target images.

Each query's logits cover the batch's targets and the batch's references (a reference is the hardest easy mistake:
it looks like the target but ignores the text); duplicates of the true target are masked. The reversed-query loss of
BLIP4CIR+Bi (target + text, marked as reversed, must find the reference) is an option (`reverse_weight`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .train_data import TripletData

REVERSE_MARKER = 1  # "[unused0]": marks a reversed query, right after [ENC]


def contrastive_logits(queries: torch.Tensor, candidates: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    return queries @ candidates.t() / temp.clamp(min=1e-3, max=0.5)


def masked_cross_entropy(logits: torch.Tensor, cand_rows: np.ndarray, positive_rows: np.ndarray) -> torch.Tensor:
    """Cross-entropy against column i for row i, ignoring other columns that show the same image as the positive."""
    same = torch.from_numpy(positive_rows[:, None] == cand_rows[None, :])
    labels = torch.arange(len(positive_rows))
    same[labels, labels] = False
    return F.cross_entropy(logits.masked_fill(same, float("-inf")), labels)


class Stage1Task:
    def __init__(self, model, data: TripletData, val_benchmark=None, val_queries: int | None = 1000, reverse_weight: float = 0.0):
        self.model = model
        self.module = model.stage1
        self.data = data
        self.reverse_weight = reverse_weight
        self.val_benchmark = _subset(val_benchmark, val_queries) if val_benchmark is not None else None

    def num_batches(self, batch_size: int) -> int:
        return len(self.data) // batch_size

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        order = rng.permutation(len(self.data))
        for start in range(0, self.num_batches(batch_size) * batch_size, batch_size):
            yield order[start : start + batch_size]

    def loss(self, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        stage1, data = self.module, self.data
        ref_rows, tgt_rows = data.ref_rows[idx], data.target_rows[idx]
        tokens = stage1.image_tokens(data.pixels[np.concatenate([ref_rows, tgt_rows])].float())
        ref_tokens, tgt_tokens = tokens.split(len(idx))
        image_emb = stage1.image_embedding(tokens)
        texts = [data.queries[i].text for i in idx]
        ids, mask = self.model.tokenizer(texts)
        query_emb = stage1.query_embedding(stage1.fuse(ref_tokens, ids, mask))
        cand_rows = np.concatenate([tgt_rows, ref_rows])
        logits = contrastive_logits(query_emb, image_emb.roll(-len(idx), 0), stage1.temp)
        loss = masked_cross_entropy(logits, cand_rows, tgt_rows)
        logs = {"loss": loss.item()}
        if self.reverse_weight:
            rev_ids = torch.cat([ids[:, :1], torch.full_like(ids[:, :1], REVERSE_MARKER), ids[:, 1:]], 1)
            rev_mask = torch.cat([mask[:, :1], mask], 1)
            rev_emb = stage1.query_embedding(stage1.fuse(tgt_tokens, rev_ids, rev_mask))
            rev_loss = masked_cross_entropy(contrastive_logits(rev_emb, image_emb, stage1.temp), np.concatenate([ref_rows, tgt_rows]), ref_rows)
            loss = loss + self.reverse_weight * rev_loss
            logs["reverse"] = rev_loss.item()
        return loss, logs

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        if self.val_benchmark is None:
            return {}
        from .dense import DenseRetriever

        retriever = DenseRetriever(self.model)
        retriever.index(self.val_benchmark.gallery)
        run = retriever.search(self.val_benchmark.queries, len(self.val_benchmark.gallery))
        return {f"val_{k}": v for k, v in self.val_benchmark.evaluate(run).items()}

    def save_weights(self, path: Path) -> None:
        from ..models import save_checkpoint

        save_checkpoint(self.model, path, parts=("stage1",))


def _subset(benchmark, n: int | None):
    """The first n queries of a benchmark (same gallery), for a quick per-epoch validation."""
    if n is None or n >= len(benchmark.queries):
        return benchmark
    queries = benchmark.queries[:n]
    keep = {q.id for q in queries}
    pick = lambda d: None if d is None else {k: v for k, v in d.items() if k in keep}  # noqa: E731
    return replace(benchmark, queries=queries, targets=pick(benchmark.targets), subsets=pick(benchmark.subsets))
