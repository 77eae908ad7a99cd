"""Key mapping from the reference work's and LAVIS/BLIP checkpoints to cir's module names.

Stage-one files (`BLIP_Retrieval`, LAVIS `blip_retrieval`, BLIP `model_base*.pth`) and stage-two files (`BLIP_NLVR`)
share one naming scheme.  Text-encoder, projection, `temp` and `cls_head` names are already cir's (cir builds the
same module tree); only the timm-style ViT names are renamed to transformers' `BlipVisionModel` names.

Keys that are dropped on purpose (`IGNORED_KEYS`), all unused at inference:
* `text_encoder.embeddings.position_ids`: a constant arange buffer (transformers rebuilds it);
* LAVIS/BLIP training state: momentum encoders `visual_encoder_m.*`, `text_encoder_m.*`, `vision_proj_m.*`,
  `text_proj_m.*`; the contrastive queues `image_queue`, `text_queue`, `idx_queue` and the queue pointer
  (`ptr_queue` in BLIP, `queue_ptr` in LAVIS);
* heads that retrieval does not use: `itm_head.*` (image-text matching) and `text_decoder.*` (captioning, present in
  BLIP's pre-training checkpoints).
Every other key must map onto the model, or loading fails listing it.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, TypeVar

V = TypeVar("V")

IGNORED_KEYS = (
    re.compile(r"^text_encoder\.embeddings\.position_ids$"),
    re.compile(r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m)\."),
    re.compile(r"^(image_queue|text_queue|idx_queue|ptr_queue|queue_ptr)$"),
    re.compile(r"^(itm_head|text_decoder)\."),
)

# timm-style ViT names (reference `VisionTransformer`) -> transformers `BlipVisionModel` names.
_VIT_RENAMES = (
    (re.compile(r"^cls_token$"), "embeddings.class_embedding"),
    (re.compile(r"^pos_embed$"), "embeddings.position_embedding"),
    (re.compile(r"^patch_embed\.proj\.(weight|bias)$"), r"embeddings.patch_embedding.\1"),
    (re.compile(r"^blocks\.(\d+)\.norm1\.(weight|bias)$"), r"encoder.layers.\1.layer_norm1.\2"),
    (re.compile(r"^blocks\.(\d+)\.norm2\.(weight|bias)$"), r"encoder.layers.\1.layer_norm2.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"), r"encoder.layers.\1.self_attn.qkv.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$"), r"encoder.layers.\1.self_attn.projection.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$"), r"encoder.layers.\1.mlp.\2.\3"),
    (re.compile(r"^norm\.(weight|bias)$"), r"post_layernorm.\1"),
)

VIT_PREFIX = "visual_encoder."


def is_ignored(key: str) -> bool:
    return any(pattern.search(key) for pattern in IGNORED_KEYS)


def reference_key_to_cir(key: str) -> str | None:
    """cir name of a reference/LAVIS key; None when the key is ignored on purpose.

    A ViT key with no known rename comes back unchanged, so the completeness check reports it as unexpected.
    """
    if is_ignored(key):
        return None
    if key.startswith(VIT_PREFIX):
        inner = key[len(VIT_PREFIX):]
        for pattern, replacement in _VIT_RENAMES:
            if pattern.match(inner):
                return VIT_PREFIX + pattern.sub(replacement, inner)
    return key


def convert_reference_state(state: Mapping[str, V]) -> tuple[dict[str, V], dict[str, str]]:
    """(cir-keyed values, cir key -> original key) for a reference-named mapping (tensors or just shapes)."""
    converted: dict[str, V] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new_key = reference_key_to_cir(key)
        if new_key is None:
            continue
        converted[new_key] = value
        origin[new_key] = key
    return converted, origin


def reference_stage(keys: Iterable[str]) -> str:
    """"stage2" for a `BLIP_NLVR` state dict (it has `cls_head`), else "stage1"."""
    return "stage2" if any(key.startswith("cls_head.") for key in keys) else "stage1"
