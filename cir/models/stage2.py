"""Stage two (the reference `BLIP_NLVR` with its dual text encoder): scores (query, candidate) pairs.

Two branches run in lock-step through every layer (golden README section 3):
branch 0 starts from z_t (stage one's fused hidden state, used as-is), branch 1 from stage two's own text
embeddings of the same ids.  Each layer: separate self-attention per branch; separate cross-attention per branch to
the candidate image tokens (followed by their difference from the reference's when the config says
`stage2_reads_reference`) whose two outputs are merged (averaged below `stage2_average_layers`, else concatenated
and projected by `merge_layer`, no activation) and added to each branch's own residual; a shared FFN.
The two first tokens go through `cls_head`; the score is logit 0.

Attention, embeddings and FFN are transformers' BLIP text modules; module names follow the reference checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import BlipTextConfig
from transformers.models.blip.modeling_blip_text import (
    BlipTextEmbeddings,
    BlipTextIntermediate,
    BlipTextOutput,
    BlipTextSelfAttention,
)

from .config import ModelConfig
from .text import blip_text_config
from .vision import build_vision_encoder, vision_tokens

if TYPE_CHECKING:
    from .stage1 import Stage1Model

BranchStates = tuple[torch.Tensor, torch.Tensor]


class DualAttentionOutput(nn.Module):
    """Per-branch output projection and LayerNorm; `merge` says how the two projected outputs combine.

    "separate": h_b = LN_b(dense_b(ctx_b) + h_b) (self-attention);
    "average": m = (dense0(ctx0) + dense1(ctx1)) / 2, h_b = LN_b(m + h_b);
    "concat": m = merge_layer(cat[dense0(ctx0), dense1(ctx1)]), h_b = LN_b(m + h_b).
    """

    def __init__(self, config: BlipTextConfig, merge: str) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.merge = merge
        self.dense0 = nn.Linear(hidden, hidden)
        self.dense1 = nn.Linear(hidden, hidden)
        if merge == "concat":
            self.merge_layer = nn.Linear(2 * hidden, hidden)
        self.LayerNormA = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.LayerNormB = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, ctx0: torch.Tensor, ctx1: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor) -> BranchStates:
        d0, d1 = self.dense0(ctx0), self.dense1(ctx1)
        if self.merge == "average":
            d0 = d1 = (d0 + d1) / 2
        elif self.merge == "concat":
            d0 = d1 = self.merge_layer(torch.cat([d0, d1], dim=-1))
        return self.LayerNormA(self.dropout(d0) + h0), self.LayerNormB(self.dropout(d1) + h1)


class DualAttention(nn.Module):
    """Self- or cross-attention with separate query/key/value weights per branch (`self0`, `self1`)."""

    def __init__(self, config: BlipTextConfig, is_cross_attention: bool, merge: str) -> None:
        super().__init__()
        self.self0 = BlipTextSelfAttention(config, is_cross_attention=is_cross_attention)
        self.self1 = BlipTextSelfAttention(config, is_cross_attention=is_cross_attention)
        self.output = DualAttentionOutput(config, merge)

    def forward(
        self,
        h0: torch.Tensor,
        h1: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
    ) -> BranchStates:
        ctx0, _ = self.self0(h0, attention_mask=attention_mask, encoder_hidden_states=memory)
        ctx1, _ = self.self1(h1, attention_mask=attention_mask, encoder_hidden_states=memory)
        return self.output(ctx0, ctx1, h0, h1)


class DualLayer(nn.Module):
    def __init__(self, config: BlipTextConfig, merge: str) -> None:
        super().__init__()
        self.attention = DualAttention(config, is_cross_attention=False, merge="separate")
        self.crossattention = DualAttention(config, is_cross_attention=True, merge=merge)
        self.intermediate = BlipTextIntermediate(config)
        self.output = BlipTextOutput(config)

    def feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(hidden), hidden)

    def forward(
        self, h0: torch.Tensor, h1: torch.Tensor, attention_mask: torch.Tensor, cand_tokens: torch.Tensor
    ) -> BranchStates:
        h0, h1 = self.attention(h0, h1, attention_mask=attention_mask)
        h0, h1 = self.crossattention(h0, h1, memory=cand_tokens)
        return self.feed_forward(h0), self.feed_forward(h1)


class DualLayerStack(nn.Module):
    def __init__(self, config: BlipTextConfig, average_layers: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            DualLayer(config, "average" if index < average_layers else "concat")
            for index in range(config.num_hidden_layers)
        )

    def forward(
        self, h0: torch.Tensor, h1: torch.Tensor, attention_mask: torch.Tensor, cand_tokens: torch.Tensor
    ) -> BranchStates:
        for layer in self.layer:
            h0, h1 = layer(h0, h1, attention_mask, cand_tokens)
        return h0, h1


class DualTextEncoder(nn.Module):
    """The two-branch text encoder (reference `nlvr_encoder`): `embeddings` feed branch 1 only."""

    def __init__(self, config: BlipTextConfig, average_layers: int) -> None:
        super().__init__()
        self.embeddings = BlipTextEmbeddings(config)
        self.encoder = DualLayerStack(config, average_layers)

    def forward(
        self, z_t: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, cand_tokens: torch.Tensor
    ) -> BranchStates:
        additive_mask = padding_mask(attention_mask, z_t.dtype)
        return self.encoder(z_t, self.embeddings(input_ids=input_ids), additive_mask, cand_tokens)


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, 1, L) additive self-attention mask: 0 for real tokens, the dtype's minimum for padding."""
    blocked = (attention_mask[:, None, None, :] == 0).to(dtype)
    return blocked * torch.finfo(dtype).min


class Stage2Model(nn.Module):
    """Dual multimodal encoder reranker; module names follow the reference checkpoint."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        text_config = blip_text_config(config)
        if not config.share_stage2_vision:
            self.visual_encoder = build_vision_encoder(config.vision)
        self.text_encoder = DualTextEncoder(text_config, config.stage2_average_layers)
        hidden = config.text.hidden_size
        self.cls_head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, N, W) tokens of stage two's own ViT (reference wiring: both reference and candidate images)."""
        if self.config.share_stage2_vision:
            raise RuntimeError("this model's stage two shares stage one's ViT: use stage1.image_tokens")
        return vision_tokens(self.visual_encoder, pixels)

    def embeddings_from(self, stage1: "Stage1Model") -> None:
        """Use stage one's word-embedding table when the config ties them (no-op otherwise)."""
        if self.config.tie_stage2_word_embeddings:
            self.text_encoder.embeddings.word_embeddings = stage1.text_encoder.embeddings.word_embeddings

    def memory(self, cand_tokens: torch.Tensor, ref_tokens: torch.Tensor | None) -> torch.Tensor:
        """What the cross-attention reads: the candidate's tokens, then (`stage2_reads_reference`) their patch-by-patch
        difference from the reference's, so that what changed from the reference is there to read."""
        if not self.config.stage2_reads_reference:
            return cand_tokens
        if ref_tokens is None:
            raise ValueError(f"model {self.config.name}'s stage two reads the reference image: pass ref_tokens")
        if ref_tokens.shape[0] not in (1, cand_tokens.shape[0]):
            raise ValueError(
                f"reference tokens have {ref_tokens.shape[0]} rows for {cand_tokens.shape[0]} candidates (1 or as many)"
            )
        return torch.cat([cand_tokens, cand_tokens - ref_tokens], dim=1)

    def branch_states(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cand_tokens: torch.Tensor,
        ref_tokens: torch.Tensor | None = None,
    ) -> BranchStates:
        """Final hidden states of both branches, (K, L, H) each.

        Rows are aligned pairs; a single query (B = 1) is broadcast over the K candidates without copying it:
        its first self-attention runs once and cross-attention broadcasts it to K rows.  `ref_tokens` (1 or K rows)
        are the reference image's tokens, read only when the config says `stage2_reads_reference`.
        """
        batch, candidates = z_t.shape[0], cand_tokens.shape[0]
        if batch not in (1, candidates) or input_ids.shape[0] != batch or attention_mask.shape[0] != batch:
            raise ValueError(
                f"stage two pairs rows one to one or broadcasts one query: z_t has {batch} rows, ids "
                f"{input_ids.shape[0]}, mask {attention_mask.shape[0]}, candidate tokens {candidates}"
            )
        return self.text_encoder(z_t, input_ids, attention_mask, self.memory(cand_tokens, ref_tokens))

    def pair_features(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cand_tokens: torch.Tensor,
        ref_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(K, 2H) concat of both branches' first tokens, the input of `cls_head`."""
        h0, h1 = self.branch_states(z_t, input_ids, attention_mask, cand_tokens, ref_tokens)
        h0, h1 = (h.expand(cand_tokens.shape[0], -1, -1) for h in (h0, h1))
        return torch.cat([h0[:, 0], h1[:, 0]], dim=-1)

    def score(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cand_tokens: torch.Tensor,
        ref_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(K,) scores, higher is better: logit 0 of `cls_head` for each (query, candidate) row pair."""
        return self.cls_head(self.pair_features(z_t, input_ids, attention_mask, cand_tokens, ref_tokens))[:, 0]
