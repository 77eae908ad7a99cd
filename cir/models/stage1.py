"""Stage one (the reference `BLIP_Retrieval`): ViT, image-grounded text encoder and the two projections.

The query vector is the text encoder's first token after the text ("[ENC] caption") has cross-attended to the
reference image's tokens; the gallery vector is the ViT's CLS token.  Both are projected and L2-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.blip.modeling_blip_text import BlipTextModel

from .config import ModelConfig
from .text import blip_text_config
from .vision import build_vision_encoder, vision_tokens


class Stage1Model(nn.Module):
    """Module names follow the reference (`visual_encoder`, `text_encoder`, `vision_proj`, `text_proj`, `temp`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.visual_encoder = build_vision_encoder(config.vision)
        self.text_encoder = BlipTextModel(blip_text_config(config), add_pooling_layer=False)
        self.vision_proj = nn.Linear(config.vision.width, config.embed_dim)
        self.text_proj = nn.Linear(config.text.hidden_size, config.embed_dim)
        self.temp = nn.Parameter(torch.tensor(config.temp_init))

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, N, W) ViT tokens, final LayerNorm applied."""
        return vision_tokens(self.visual_encoder, pixels)

    def image_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, D) unit gallery vectors from ViT tokens: normalise(vision_proj(CLS)), normalised in float32."""
        return unit_float32(self.vision_proj(tokens[:, 0]))

    def text_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L, H) embedding output LayerNorm(word + position), the text encoder's input."""
        return self.text_encoder.embeddings(input_ids=input_ids)

    def fuse(self, ref_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) last hidden state of "[ENC] text" cross-attending to the reference image tokens: z_t."""
        output = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=ref_tokens,
        )
        return output.last_hidden_state

    def query_embedding(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, D) unit query vectors: normalise(text_proj(z_t[:, 0])), normalised in float32."""
        return unit_float32(self.text_proj(fused[:, 0]))


def unit_float32(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalise in float32: under bfloat16 autocast the projection is bf16, whose norms miss 1 by up to ~1e-2,
    more than a dense index accepts; a no-op cast in fp32."""
    return F.normalize(vectors.float(), dim=-1)
