"""transformers' BLIP text config for a cir `ModelConfig` (shared by the stage-one encoder and stage two)."""

from __future__ import annotations

from transformers import BlipTextConfig

from .config import ModelConfig


def blip_text_config(config: ModelConfig) -> BlipTextConfig:
    """BLIP "med" text settings: exact-erf GELU, eps 1e-12, cross-attention keys/values of `encoder_width`.

    `is_decoder=True` only makes transformers build the cross-attention modules; cir always runs the encoder
    bidirectionally (the forward's `is_decoder` stays False).
    """
    text = config.text
    return BlipTextConfig(
        vocab_size=text.vocab_size,
        hidden_size=text.hidden_size,
        encoder_hidden_size=config.encoder_width,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=text.num_layers,
        num_attention_heads=text.num_heads,
        max_position_embeddings=text.max_positions,
        hidden_act="gelu",
        layer_norm_eps=text.layer_norm_eps,
        hidden_dropout_prob=text.dropout,
        attention_probs_dropout_prob=text.dropout,
        pad_token_id=0,
        is_decoder=True,
        use_cache=False,
    )
