"""Stage two: the dual multimodal encoder reranks each query's top-K candidates from cached patch tokens."""

from __future__ import annotations

from typing import Sequence

import torch

from ..cache import FeatureCache
from ..errors import CirError
from ..pipeline import Reranker
from ..types import Gallery, Query, Ranking, Run
from .dense import EncodedQueries, QueryStates, encode_queries
from .encoding import TowerEncoder, progress


def reranker_tower(model) -> str:
    """Stage two reads stage one's ViT tokens when configured to share them, else its own ViT's."""
    return "stage1" if model.config.share_stage2_vision else "stage2"


@torch.inference_mode()
def score_candidates(
    model,
    ref_tokens: torch.Tensor,
    query: str | EncodedQueries,
    cand_tokens: torch.Tensor,
    stage1_weight: float = 0.0,
) -> torch.Tensor:
    """Scores of K candidates for one query (its text, or stage one's one-row encoding of it): z_t from stage one,
    the dual encoder's logit, plus `stage1_weight` times stage one's dense similarity (computed from the same
    candidate tokens, which must be stage one's)."""
    q = query if isinstance(query, EncodedQueries) else encode_queries(model, ref_tokens, [query])
    scores = model.stage2.score(q.fused, q.input_ids, q.attention_mask, cand_tokens, ref_tokens)
    if stage1_weight:
        scores = scores.float() + stage1_weight * (model.stage1.image_embedding(cand_tokens) @ q.embeddings[0].float())
    return scores


class DualEncoderReranker(Reranker):
    """Scores (reference, text, candidate) triplets, plus `stage1_weight` times stage one's dense similarity.

    The dense similarity is recomputed from the candidates' cached stage-one tokens, whatever retriever proposed
    them, so the combination is the same on top of a dense or a sparse stage one (a sparse dot product has another
    scale). `stage1_weight=None` uses 1 / stage one's temperature: the combination the tiny model's stage two was
    trained to correct; a pretrained tag's own calibrated weight comes with its model (`pretrained_cfg`). The
    reference wiring ranks by the stage-two logit alone (`stage1_weight=0`).

    Settings (`stage_two` of a config): `stage1_weight`, `batch_size` (gallery images per encoder batch).
    """

    name = "dual-encoder"

    def __init__(
        self,
        model,
        cache: FeatureCache | None = None,
        stage1_weight: float | None = None,
        batch_size: int = 64,
    ) -> None:
        if model.stage2 is None:
            raise CirError(
                f"model {model.config.name!r} has no stage-two weights: give model.stage2 (a checkpoint), "
                "or run stage one alone (stage_two: null)"
            )
        self.model = model
        self.encoder = TowerEncoder(model, reranker_tower(model), cache, batch_size)
        if stage1_weight is None:
            stage1_weight = model.pretrained_cfg.get("stage1_weight")
        if stage1_weight is None:
            stage1_weight = 1.0 / model.stage1.temp.clamp(1e-3, 0.5).item()
        if stage1_weight and not model.config.share_stage2_vision:
            raise CirError(
                f"stage1_weight {stage1_weight:g} needs stage two to read stage one's ViT tokens; "
                f"model {model.config.name} gives stage two its own ViT: set stage_two.stage1_weight to 0"
            )
        self.stage1_weight = stage1_weight

    def index(self, gallery: Gallery) -> None:
        self.encoder.index(gallery)

    @property
    def images_encoded(self) -> int | None:
        return None if self.encoder.features is None else self.encoder.features.encoded

    def stage_one_states(self, run: Run) -> QueryStates | None:
        """The run's query encodings if they are what this reranker would compute: the same stage-one weights and
        precision, with reference tokens from the same tower."""
        states = run.query_states
        if not isinstance(states, QueryStates) or self.encoder.tower != "stage1":
            return None
        return states if states.stage1 is self.model.stage1 and states.bf16 == self.encoder.autocast_bf16 else None

    def rerank(self, queries: Sequence[Query], run: Run, k: int | None = None) -> Run:
        out = Run(name=f"{run.name} >> {self.name}")
        states = self.stage_one_states(run)
        for query in progress(queries, len(queries), 1, "stage two"):
            first = run[query.id]
            depth = len(first) if k is None else min(k, len(first))
            head_ids = first.ids[:depth]
            with self.encoder.autocast():
                ref = self.encoder.tokens([query.reference])
                cand = self.encoder.tokens(head_ids)
                encoded = states.get(query) if states is not None else None
                text = query.text if encoded is None else encoded
                scores = score_candidates(self.model, ref, text, cand, self.stage1_weight).float()
            order = torch.argsort(scores, descending=True, stable=True).tolist()
            ids = [head_ids[i] for i in order] + first.ids[depth:]
            head_scores = [float(scores[i]) for i in order]
            floor = min(head_scores, default=0.0)
            tail = [floor - 1.0 - i for i in range(len(first) - depth)]  # the unreranked tail stays below, in order
            out[query.id] = Ranking(query.id, ids, head_scores + tail)
        return out
