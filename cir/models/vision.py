"""The ViT image encoder, built from transformers' `BlipVisionModel` at the sizes of a `VisionConfig`."""

from __future__ import annotations

import torch
from transformers import BlipVisionConfig, BlipVisionModel

from .config import VisionConfig


def build_vision_encoder(config: VisionConfig) -> BlipVisionModel:
    """A ViT with exact-erf GELU, LayerNorm eps 1e-6 and a final LayerNorm, as in BLIP's `VisionTransformer`."""
    hf_config = BlipVisionConfig(
        hidden_size=config.width,
        intermediate_size=config.width * config.mlp_ratio,
        num_hidden_layers=config.depth,
        num_attention_heads=config.heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_act="gelu",
        layer_norm_eps=config.layer_norm_eps,
        attention_dropout=0.0,
        initializer_range=0.02,  # the transformers default (1e-10) would start a from-scratch ViT at zero
    )
    return BlipVisionModel(hf_config)


def vision_tokens(encoder: BlipVisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """(B, N, W) tokens (CLS first, patches row-major) after the final LayerNorm."""
    return encoder(pixel_values=pixels).last_hidden_state
