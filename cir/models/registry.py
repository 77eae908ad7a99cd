"""Named model configs (like open_clip / timm): `register_model`, `get_model_config`, `list_models`."""

from __future__ import annotations

from dataclasses import replace

from ..registry import Registry
from .config import ModelConfig, TextConfig, VisionConfig

_configs: Registry[ModelConfig] = Registry("model")


def register_model(name: str, config: ModelConfig) -> ModelConfig:
    """Make `config` available to `create_model(name)` (stamped with `name`); re-registering a name replaces it."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"register_model({name!r}) needs a ModelConfig, got {type(config).__name__}")
    config = replace(config, name=name)
    _configs.register(name, config)
    return config


def get_model_config(name: str) -> ModelConfig:
    """The config registered as `name`; an unknown name raises CirError listing the known ones."""
    return _configs.get(name)


def list_models() -> list[str]:
    return _configs.names()


register_model(
    "blip-base",
    ModelConfig(
        vision=VisionConfig(image_size=384, patch_size=16, width=768, depth=12, heads=12),
        text=TextConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
        embed_dim=256,
        stage2_average_layers=6,
        description="BLIP base (ViT-B/16 at 384 px, BERT-base) with the reference wiring; "
        "loads the reference work's and LAVIS checkpoints, and transformers' Salesforce/blip-itm-base-coco",
    ),
)

register_model(
    "blip-large",
    ModelConfig(
        vision=VisionConfig(image_size=384, patch_size=16, width=1024, depth=24, heads=16),
        text=TextConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
        embed_dim=256,
        stage2_average_layers=6,
        description="BLIP large (ViT-L/16 at 384 px, BERT-base cross-attending 1024-wide image tokens); stage one "
        "loads transformers' Salesforce/blip-itm-large-coco",
    ),
)

register_model(
    "blip-golden",
    ModelConfig(
        vision=VisionConfig(image_size=32, patch_size=16, width=48, depth=2, heads=4),
        text=TextConfig(hidden_size=12, num_layers=8, num_heads=3, intermediate_size=48),
        embed_dim=16,
        stage2_average_layers=6,
        description="the sizes of the golden parity fixtures (random weights), reference wiring",
    ),
)

register_model(
    "blip-tiny",
    ModelConfig(
        vision=VisionConfig(image_size=63, patch_size=21, width=192, depth=4, heads=3),
        text=TextConfig(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512),
        embed_dim=128,
        stage2_average_layers=2,
        share_stage2_vision=True,
        tie_stage2_word_embeddings=True,
        stage2_reads_reference=True,
        description="CPU-trainable size shipped with the package; 63 px images in 21 px patches (10 tokens): one "
        "patch per cell of the synthetic benchmark's 3x3 grid, and 10 tokens an image where 8 px patches make 65; "
        "stage two shares stage one's ViT tokens and word embeddings and reads what changed from the reference",
    ),
)
