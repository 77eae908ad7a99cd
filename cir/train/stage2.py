"""Training the stage-two reranker: listwise cross-entropy over groups of (reference, text, candidate) triplets.

Stage one is frozen, so its work is done once: every training image's ViT tokens and every query's z_t are
precomputed, and stage one's own top-ranked mistakes on the training set are mined as negatives. Each query's group is
its target, its one-edit near-duplicates (the img_set), its reference, and mined stage-one negatives; in-batch
contrastive training as in the reference work is the `mined_negatives=0, near_duplicates=False` setting.

Stage two learns as a correction of stage one: the training logits add `stage1_weight_scale / temperature` times the
stage-one similarity. On the synthetic benchmark an auxiliary loss (`scene_weight`, training-only, not saved) asks a
linear probe on the head's input which grid cells of each candidate differ from the target's, and another to name
the candidate's whole scene: the cross-attention learns to read the candidate's cells, and every candidate of a
group says where it goes wrong rather than only whether it is the target.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .data import TripletData, TripletTask
from ..errors import CirError
from ..stages.rerank import reranker_tower
from .mining import mine_negatives, precompute_stage_one, tower_tokens

log = logging.getLogger(__name__)


@torch.no_grad()
def init_stage2_from_stage1(model) -> None:
    """Start both stage-two branches from stage one's text encoder, so the reranker begins as a grounded reader.

    Per layer, self0/self1 and dense0/dense1 copy stage one's attention, LayerNormA/B its LayerNorm, the shared FFN
    its FFN; a concat merge layer starts as the average of the two branches; the head's last layer starts at zero.
    """
    text1, text2 = model.stage1.text_encoder, model.stage2.text_encoder
    text2.embeddings.load_state_dict(text1.embeddings.state_dict(), strict=False)
    for layer1, layer2 in zip(text1.encoder.layer, text2.encoder.layer):
        for name in ("attention", "crossattention"):
            one, two = getattr(layer1, name), getattr(layer2, name)
            for branch in "01":
                getattr(two, f"self{branch}").load_state_dict(one.self.state_dict())
                getattr(two.output, f"dense{branch}").load_state_dict(one.output.dense.state_dict())
            for norm in ("LayerNormA", "LayerNormB"):
                getattr(two.output, norm).load_state_dict(one.output.LayerNorm.state_dict())
            if hasattr(two.output, "merge_layer"):
                hidden = two.output.merge_layer.out_features
                two.output.merge_layer.weight.copy_(torch.cat([torch.eye(hidden), torch.eye(hidden)], 1) / 2)
                two.output.merge_layer.bias.zero_()
        layer2.intermediate.load_state_dict(layer1.intermediate.state_dict())
        layer2.output.load_state_dict(layer1.output.state_dict())
    last = model.stage2.cls_head[-1]  # a zero head: stage two starts as "no correction" to stage one
    last.weight.zero_()
    last.bias.zero_()


class Stage2Task(TripletTask):
    def __init__(
        self,
        model,
        data: TripletData,
        val_benchmark=None,
        val_queries: int | None = 500,
        group_size: int = 8,
        near_duplicates: bool = True,
        mined_negatives: int = 2,
        mine_depth: int = 20,
        init_from_stage1: bool = True,
        init_from: str | None = None,
        calibration_queries: int = 500,
        calibration_depth: int = 50,
        stage1_weight_scale: float = 1.0,
        scene_weight: float = 0.0,
        scene_labels: torch.Tensor | None = None,
        cache=None,
    ):
        super().__init__(model, data, val_benchmark, val_queries)
        if not 0 <= calibration_queries < len(data):
            raise CirError(f"calibration_queries {calibration_queries} leaves no training query of {len(data)}: "
                           "set train_stage2.options.calibration_queries lower (0 turns the calibration off)")
        self.cache = cache
        self.module = torch.nn.ModuleDict({"stage2": model.stage2})
        self.stage1_weight = stage1_weight_scale / model.stage1.temp.clamp(1e-3, 0.5).item()
        self.scene_weight = scene_weight if scene_labels is not None else 0.0
        self.scene_labels = scene_labels
        if self.scene_weight:
            from .probes import SceneProbes, scene_classes

            cells, width = scene_labels.shape[1], 2 * model.config.text.hidden_size
            classes = scene_classes(scene_labels)
            self.probes = SceneProbes(width, width, cells, classes, per_patch=False)
            self.cell_probe = torch.nn.Linear(width, cells)
            self.module["probes"] = self.probes
            self.module["cell_probe"] = self.cell_probe
        self.group_size = group_size
        self.near_duplicates = near_duplicates
        self.mined_negatives = mined_negatives
        model.stage1.eval()
        model.stage1.requires_grad_(False)
        if init_from is not None:  # the reference's start: BLIP's pre-trained weights copied into both branches
            from ..models.checkpoint import apply_checkpoints, read_checkpoint, stage2_init_from

            apply_checkpoints(model, [stage2_init_from(read_checkpoint(init_from), model)])
        elif init_from_stage1:
            init_stage2_from_stage1(model)
        if model.config.tie_stage2_word_embeddings:
            model.stage2.embeddings_from(model.stage1)
        stage1_tokens, self.image_emb, self.fused, self.ids, self.mask, self.query_emb = precompute_stage_one(model, data, cache)
        # stage two reads the tokens it reads at inference: stage one's when shared, else its own (frozen) ViT's
        own = reranker_tower(model)
        self.tokens = stage1_tokens if own == "stage1" else tower_tokens(model, own, data, cache)[0]
        self.mined = mine_negatives(self.query_emb, self.image_emb, data, mine_depth) if mined_negatives else None
        # the last training queries are held out to choose the weight of the stage-one score (never the eval split)
        self.train_count = len(data) - calibration_queries
        self.calibration_depth = calibration_depth

    def batches(self, batch_size: int, rng: np.random.Generator, workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for idx in self.query_batches(batch_size, rng):
            yield idx, self._groups(idx, rng)

    def _groups(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, G) image rows per query, the target first."""
        data, n_images = self.data, len(self.tokens)
        groups = np.empty((len(idx), self.group_size), dtype=np.int64)
        for r, q in enumerate(idx):
            negatives = [data.ref_rows[q]]
            if self.near_duplicates:
                negatives += list(data.hard_rows[q])
            if self.mined is not None:
                negatives += list(rng.choice(self.mined[q], self.mined_negatives, replace=False))
            # in-batch negatives fill the rest: other queries' targets
            others = data.target_rows[idx[idx != q]]
            negatives += list(rng.permutation(others))
            negatives = [n for n in negatives if n != data.target_rows[q]]
            while len(negatives) < self.group_size - 1:
                negatives.append(int(rng.integers(n_images)))
            groups[r] = [data.target_rows[q], *negatives[: self.group_size - 1]]
        return groups

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        idx, groups = batch
        b, g = groups.shape
        length = int(self.mask[idx].sum(1).max())
        fused = self.fused[idx, :length].float().repeat_interleave(g, 0)
        ids = self.ids[idx, :length].repeat_interleave(g, 0)
        mask = self.mask[idx, :length].repeat_interleave(g, 0)
        rows = torch.from_numpy(groups)
        cand = self.tokens[rows.reshape(-1)].float()
        ref = self.tokens[torch.from_numpy(self.data.ref_rows[idx])].float().repeat_interleave(g, 0)
        stage2 = self.model.stage2
        features = stage2.pair_features(fused, ids, mask, cand, ref)
        scores = stage2.cls_head(features)[:, 0].view(b, g)
        if self.stage1_weight:
            first = torch.einsum("bd,bgd->bg", self.query_emb[idx], self.image_emb[rows])
            scores = scores + self.stage1_weight * first
        loss = F.cross_entropy(scores, torch.zeros(b, dtype=torch.long))
        # a query counts as right only when its target strictly outscores the group (a zero head ties everything)
        logs = {"loss": loss.item(), "acc": (scores[:, 0] > scores[:, 1:].amax(1)).float().mean().item()}
        if self.scene_weight:
            labels = self.scene_labels[rows]  # (B, G, cells, 3); column 0 is the target
            differs = (labels != labels[:, :1]).any(-1).float().reshape(b * g, -1)
            cells = F.binary_cross_entropy_with_logits(self.cell_probe(features), differs)
            scene = self.probes.loss(self.probes.image, features, labels.reshape(b * g, *labels.shape[2:]))
            loss = loss + self.scene_weight * (cells + scene)
            logs.update(cells=cells.item(), scene=scene.item())
        return loss, logs

    def _scores(self, q: int, cand_rows: torch.Tensor) -> torch.Tensor:
        """Stage-two scores of one training query (unpadded) against candidate image rows."""
        n = int(self.mask[q].sum())
        z_t, ids, mask = self.fused[q : q + 1, :n].float(), self.ids[q : q + 1, :n], self.mask[q : q + 1, :n]
        ref = self.tokens[int(self.data.ref_rows[q])][None].float()
        return self.model.stage2.score(z_t, ids, mask, self.tokens[cand_rows].float(), ref)

    @torch.inference_mode()
    def calibrate(self, weights=(0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)) -> dict[str, float]:
        """R@1 on the held-out training queries for several weights w of score = stage two + w * stage one.

        Candidates are each query's stage-one top `calibration_depth` among all loaded training images.
        """
        rows = np.arange(self.train_count, len(self.data))
        if len(rows) == 0:
            return {}
        data = self.data
        sims = self.query_emb[rows] @ self.image_emb.t()
        sims[torch.arange(len(rows)), torch.from_numpy(data.ref_rows[rows])] = float("-inf")
        first, cands = sims.topk(self.calibration_depth, dim=1)
        second = torch.stack([self._scores(q, cands[i]) for i, q in enumerate(rows)])
        targets = torch.from_numpy(data.target_rows[rows])
        def recall_at_1(scores: torch.Tensor) -> float:
            return 100 * float((cands.gather(1, scores.argmax(1, keepdim=True)).squeeze(1) == targets).float().mean())

        recall = {w: recall_at_1(second + w * first) for w in sorted({*weights, self.stage1_weight})}
        best = max(recall, key=recall.get)
        return {"heldout_stage1_r1": recall_at_1(first), **{f"heldout_r1_w{w:g}": r for w, r in recall.items()}, "best_stage1_weight": best}

    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        out = self.calibrate()
        if self.val_benchmark is None:
            return out
        from ..eval.metrics import evaluate
        from ..pipeline import Pipeline
        from ..stages.dense import DenseRetriever
        from ..stages.rerank import DualEncoderReranker

        b = self.val_benchmark
        reranker = DualEncoderReranker(self.model, self.cache, stage1_weight=self.stage1_weight)
        pipeline = Pipeline(DenseRetriever(self.model, self.cache), [(reranker, None)], b.top_k, b.exclude_reference)
        pipeline.index(b.gallery)
        runs = pipeline.run(b.queries, depth=len(b.gallery))
        for stage, run in runs.items():
            metrics = evaluate(b, run)
            out.update({f"val_{stage}_{m}": metrics[m] for m in ("recall@1", "recall@5", "recall_subset@1") if m in metrics})
        return out

    def save_weights(self, path: Path) -> None:
        from ..models import save_checkpoint

        save_checkpoint(self.model, path, parts=("stage2",))
