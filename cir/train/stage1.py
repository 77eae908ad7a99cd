"""Training dense stage one: in-batch contrastive loss between composed queries and target images.

Each query's logits cover the batch's targets and the batch's references (a reference is the hardest easy mistake:
it looks like the target but ignores the text); duplicates of the true target are masked. The reversed-query loss of
BLIP4CIR+Bi (target + text, marked as reversed, must find the reference) is an option (`reverse_weight`).

On the synthetic benchmark, whose metadata describes every scene, an auxiliary loss (`scene_weight`) asks a linear
probe on each image's CLS token to name every grid cell's shape, colour and size, and a probe on the query's first
token to name the *target's*. When the ViT's patch grid is the scene grid (blip-tiny: one 21 px patch per cell), a
third probe asks each patch token for its own cell's content: patch tokens learn that in about a hundred steps,
and the CLS token and the text's cross-attention then read clean per-cell features. The probes give both towers a
direct signal from the first step, where the contrastive loss alone sits on a plateau for hundreds of steps. They
are training-only and are not saved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CirError
from .data import TripletData, TripletTask, image_batches
from .probes import SceneProbes, scene_classes

REVERSE_MARKER = 1  # "[unused0]": marks a reversed query, right after [ENC]


def contrastive_logits(queries: torch.Tensor, candidates: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    return queries @ candidates.t() / temp.clamp(min=1e-3, max=0.5)


def masked_cross_entropy(
    logits: torch.Tensor, cand_rows: np.ndarray, positive_rows: np.ndarray, offset: int = 0
) -> torch.Tensor:
    """Cross-entropy against column offset + i for row i, ignoring other columns that show the same image as the
    positive (`offset`: where this process's queries' positives start among candidates gathered from every rank)."""
    same = torch.from_numpy(positive_rows[:, None] == cand_rows[None, :]).to(logits.device)
    labels = torch.arange(len(positive_rows), device=logits.device) + offset
    same[torch.arange(len(positive_rows), device=logits.device), labels] = False
    return F.cross_entropy(logits.masked_fill(same, float("-inf")), labels)


class _ReferencesThenTargets:
    """The image rows a stage-one batch reads: its queries' references, then their targets."""

    def __init__(self, data: TripletData) -> None:
        self.ref_rows, self.target_rows = data.ref_rows, data.target_rows

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return np.concatenate([self.ref_rows[idx], self.target_rows[idx]])


class Stage1Task(TripletTask):
    def __init__(
        self,
        model,
        data: TripletData,
        val_benchmark=None,
        val_queries: int | None = 1000,
        reverse_weight: float = 0.0,
        scene_weight: float = 0.0,
        scene_labels: torch.Tensor | None = None,
        random_captions: bool = False,
        freeze_vision: bool = False,
        cache=None,
    ):
        super().__init__(model, data, val_benchmark, val_queries)
        if random_captions and data.variants is None:
            raise CirError("train_stage1.options.random_captions: this benchmark has one text per query (FashionIQ has variants)")
        self.random_captions = random_captions
        self.texts = [q.text for q in data.queries]
        self.reverse_weight = reverse_weight
        self.scene_weight = scene_weight if scene_labels is not None else 0.0
        self.scene_labels = scene_labels
        self.module = torch.nn.ModuleDict({"stage1": model.stage1})
        # the reference freezes the ViT: its tokens of every training image are then computed once (feature cache)
        self.tokens = None
        if freeze_vision:
            from .mining import tower_tokens

            model.stage1.visual_encoder.requires_grad_(False)
            with torch.inference_mode():
                self.tokens = tower_tokens(model, "stage1", data, cache)[0]
        if self.scene_weight:
            cfg = model.config
            classes = scene_classes(scene_labels)
            cells = scene_labels.shape[1]
            per_patch = cfg.vision.num_tokens - 1 == cells
            self.probes = SceneProbes(cfg.vision.width, cfg.text.hidden_size, cells, classes, per_patch)
            self.module["probes"] = self.probes

    def batches(self, batch_size: int, rng: np.random.Generator, workers: int = 0):
        """(query indices, pixels of their references then their targets), the images read by DataLoader workers.

        With `random_captions`, each query's text this epoch is drawn from its variants (FashionIQ: the captions in
        either order, or one alone), as the reference work trains."""
        order = list(self.query_batches(batch_size, rng))
        if self.random_captions:
            self.texts = [v[int(rng.integers(len(v)))] for v in self.data.variants]
        if self.tokens is not None:  # frozen ViT: cached tokens, no image to read
            return ((idx, None) for idx in order)
        return image_batches(self.data, order, _ReferencesThenTargets(self.data), workers)

    def loss(self, batch: tuple[np.ndarray, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        idx, pixels = batch
        stage1, data = self.model.stage1, self.data
        ref_rows, tgt_rows = data.ref_rows[idx], data.target_rows[idx]
        if self.tokens is not None:
            tokens = self.tokens[np.concatenate([ref_rows, tgt_rows])]
        else:
            tokens = stage1.image_tokens(pixels.to(self.device).float())
        ref_tokens, tgt_tokens = tokens.split(len(idx))
        image_emb = stage1.image_embedding(tokens)
        texts = [self.texts[i] for i in idx]
        ids, mask = (t.to(self.device) for t in self.model.tokenizer(texts))
        fused = stage1.fuse(ref_tokens, ids, mask)
        query_emb = stage1.query_embedding(fused)
        # candidates: the targets, then the references, of the whole batch (every rank's, under DDP)
        ref_emb, tgt_emb = image_emb.split(len(idx))
        candidates = torch.cat([self.gather(tgt_emb), self.gather(ref_emb)])
        cand_rows = np.concatenate([self.gather_rows(tgt_rows), self.gather_rows(ref_rows)])
        logits = contrastive_logits(query_emb, candidates, stage1.temp)
        loss = masked_cross_entropy(logits, cand_rows, tgt_rows, offset=self.rank * len(idx))
        logs = {"loss": loss.item()}
        if self.scene_weight:
            labels = self.scene_labels[torch.from_numpy(np.concatenate([ref_rows, tgt_rows]))]
            scene = self.probes.image_loss(tokens, labels)
            scene = scene + self.probes.loss(self.probes.query, fused[:, 0], labels[len(idx) :])
            loss = loss + self.scene_weight * scene
            logs["scene"] = scene.item()
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
        from ..eval.metrics import evaluate
        from ..stages.dense import DenseRetriever

        retriever = DenseRetriever(self.model)
        retriever.index(self.val_benchmark.gallery)
        run = retriever.search(self.val_benchmark.queries, len(self.val_benchmark.gallery))
        return {f"val_{k}": v for k, v in evaluate(self.val_benchmark, run).items()}

    def save_weights(self, path: Path) -> None:
        from ..models import save_checkpoint

        save_checkpoint(self.model, path, parts=("stage1",))
