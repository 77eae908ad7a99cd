"""Training the dense-to-sparse heads by distilling stage one's dense similarities.

Loss = KL(teacher || student) over in-batch images (targets, references, and for each query `mined` images drawn
afresh every step from its `mined_pool` nearest stage-one neighbours among the training images: the ranking that
decides Recall@50 is among those), with the teacher the frozen dense similarities at `teacher_temp` and the student
the sparse dot products, plus FLOPs regularisers with separate weights for queries and images, ramped up
quadratically over `ramp_steps`. Expansion control: each query is, with a probability annealed from
1 to 0 over `anneal_steps`, restricted to its text's WordPieces plus its reference image's top `ref_terms` terms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CirError
from ..stages.sparse_head import NUM_TERMS, SparseEncoder
from .data import TripletData, TripletTask
from .mining import mine_negatives, precompute_stage_one
from ..index.sparse import expected_flops


def flops_penalty(weights: torch.Tensor) -> torch.Tensor:
    """SPLADE's FLOPs regulariser: sum over terms of the squared mean activation."""
    return weights.mean(0).pow(2).sum()


def keep_top(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but each row's k largest weights (gradients flow through the kept ones)."""
    threshold = weights.topk(min(k, weights.shape[1]), dim=1).values[:, -1:]
    return weights * (weights >= threshold)


class SparseTask(TripletTask):
    def __init__(
        self,
        model,
        data: TripletData,
        val_benchmark=None,
        val_queries: int | None = 1000,
        query_flops: float = 3e-3,
        image_flops: float = 1e-3,
        ramp_steps: int = 500,
        anneal_steps: int = 1000,
        ref_terms: int = 8,
        teacher_temp: float | None = None,
        max_query_terms: int = 32,
        max_image_terms: int = 64,
        mined: int = 0,
        trainable_vocab: bool = False,
        mined_pool: int | None = None,
        cache=None,
    ):
        if mined_pool is not None and mined_pool < mined:
            raise CirError(f"train_sparse: mined_pool ({mined_pool}) must be at least mined ({mined}), the images drawn from it")
        super().__init__(model, data, val_benchmark, val_queries)
        self.module = SparseEncoder.for_model(
            model, max_query_terms=max_query_terms, max_image_terms=max_image_terms, trainable_vocab=trainable_vocab
        )
        self.query_flops, self.image_flops = query_flops, image_flops
        self.ramp_steps, self.anneal_steps, self.ref_terms = ramp_steps, anneal_steps, ref_terms
        model.stage1.requires_grad_(False)
        _, self.image_emb, _, _, _, self.query_emb = precompute_stage_one(model, data, cache)
        self.mined_per_step = mined
        self.mined = mine_negatives(self.query_emb, self.image_emb, data, max(mined, mined_pool or 0)) if mined else None
        self.teacher_temp = teacher_temp or float(model.stage1.temp.clamp(1e-3, 0.5))
        self.text_terms = [
            torch.tensor(sorted(set(model.tokenizer.wordpiece_ids(q.text))), dtype=torch.long) for q in data.queries
        ]
        self.step = 0

    def batches(self, batch_size: int, rng: np.random.Generator, workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(queries, restriction draws, mined images) per step."""
        for idx in self.query_batches(batch_size, rng):
            yield idx, rng.random(len(idx)), self._draw_mined(idx, rng)

    def _draw_mined(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Each query's mined images for this step: `mined` of its pool at random (all of it when no larger)."""
        if self.mined is None:
            return None
        pool = self.mined[idx]
        if pool.shape[1] <= self.mined_per_step:
            return pool
        return np.take_along_axis(pool, rng.random(pool.shape).argsort(1)[:, : self.mined_per_step], 1)

    def _restrict(self, idx: np.ndarray, draws: np.ndarray, query_w: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
        """Zero the terms of restricted queries outside their text's WordPieces and the reference's top terms."""
        p_restrict = max(0.0, 1.0 - self.step / max(1, self.anneal_steps))
        restricted = np.flatnonzero(draws < p_restrict)
        if len(restricted) == 0:
            return query_w
        allowed = torch.ones(len(idx), NUM_TERMS, dtype=torch.bool)
        allowed[restricted] = False
        top_ref = ref_w[restricted].topk(self.ref_terms, dim=1).indices
        allowed[torch.from_numpy(restricted)[:, None], top_ref] = True
        for r in restricted:
            allowed[r, self.text_terms[idx[r]]] = True
        return query_w * allowed

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        idx, draws, mined = batch
        data = self.data
        rows = [data.target_rows[idx], data.ref_rows[idx]]
        if mined is not None:
            seen = set(np.concatenate(rows).tolist())
            rows.append(np.array([r for r in dict.fromkeys(mined.ravel().tolist()) if r not in seen], dtype=np.int64))
        img_rows = torch.from_numpy(np.concatenate(rows))
        q_dense, i_dense = self.query_emb[idx], self.image_emb[img_rows]
        query_w = self.module.query(q_dense)
        image_w = self.module.image(i_dense)
        query_w = self._restrict(idx, draws, query_w, image_w[len(idx) : 2 * len(idx)].detach())
        # train as searched: only each vector's top terms survive (the caps applied at inference)
        query_w = keep_top(query_w, self.module.max_query_terms)
        image_w = keep_top(image_w, self.module.max_image_terms)
        teacher = F.log_softmax(q_dense @ i_dense.t() / self.teacher_temp, dim=1)
        student = F.log_softmax(query_w @ image_w.t(), dim=1)
        kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        ramp = min(1.0, (self.step + 1) / self.ramp_steps) ** 2
        reg = ramp * (self.query_flops * flops_penalty(query_w) + self.image_flops * flops_penalty(image_w))
        self.step += 1
        logs = {
            "kl": kl.item(),
            "q_nnz": float((query_w > 0).sum(1).float().mean()),
            "d_nnz": float((image_w > 0).sum(1).float().mean()),
        }
        return kl + reg, logs

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        if self.val_benchmark is None:
            return {}
        from ..eval.metrics import evaluate
        from ..stages.sparse import SparseRetriever

        b = self.val_benchmark
        retriever = SparseRetriever(self.model, sparse_head=self.module.eval())
        retriever.index(b.gallery)
        metrics = evaluate(b, retriever.search(b.queries, 51))
        out = {f"val_sparse_{m}": metrics[m] for m in ("recall@1", "recall@10", "recall@50")}
        queries = retriever.encode_queries(b.queries)
        out["image_terms"] = float(retriever.image_vectors.getnnz(1).mean())
        out["query_terms"] = float(queries.getnnz(1).mean())
        out["flops_per_pair"] = expected_flops(queries, retriever.image_vectors)
        return out

    def save_weights(self, path: Path) -> None:
        self.module.save(path)
