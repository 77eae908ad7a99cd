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

transformers folders (`save_pretrained` of `BlipForImageTextRetrieval`, as on the hub: `Salesforce/blip-itm-*-coco`)
name the ViT `vision_model` (renamed to `visual_encoder`; the inner names are already cir's, both being
`BlipVisionModel`); the text encoder and projections keep their names. `TRANSFORMERS_DROPPED` lists the keys dropped
on purpose with the reason; such a folder holds no `temp` (see `TRANSFORMERS_ABSENT`).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, TypeVar

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


def convert_state(
    state: Mapping[str, V], key_to_cir: Callable[[str], str | None]
) -> tuple[dict[str, V], dict[str, str]]:
    """(cir-keyed values, cir key -> original key) for a mapping (tensors or just shapes) renamed by `key_to_cir`,
    which returns None for a key dropped on purpose."""
    converted: dict[str, V] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new_key = key_to_cir(key)
        if new_key is None:
            continue
        converted[new_key] = value
        origin[new_key] = key
    return converted, origin


def convert_reference_state(state: Mapping[str, V]) -> tuple[dict[str, V], dict[str, str]]:
    """(cir-keyed values, cir key -> original key) for a reference-named mapping (tensors or just shapes)."""
    return convert_state(state, reference_key_to_cir)


def reference_stage(keys: Iterable[str]) -> str:
    """"stage2" for a `BLIP_NLVR` state dict (it has `cls_head`), else "stage1"."""
    return "stage2" if any(key.startswith("cls_head.") for key in keys) else "stage1"


# --- transformers `BlipForImageTextRetrieval` folders -------------------------------------------------------------

TRANSFORMERS_VIT_PREFIX = "vision_model."

# Keys of a transformers retrieval checkpoint that cir's stage one has no use for, with the reason.
TRANSFORMERS_DROPPED = (
    (re.compile(r"^itm_head\."), "image-text matching head: stage one ranks by the projections' cosine"),
    (re.compile(r"\.position_ids$"), "constant arange buffer (older transformers saved it; rebuilt at load)"),
)

# cir stage-one keys such a checkpoint does not hold, kept at the model's initial value, with the reason.
TRANSFORMERS_ABSENT = {
    "temp": "BlipForImageTextRetrieval has no contrastive temperature: kept at the config's temp_init "
    "(0.07, where the reference's stage-one training starts)",
}


def transformers_drop_reason(key: str) -> str | None:
    """Why a transformers key is dropped on purpose; None when it must map onto the model."""
    return next((reason for pattern, reason in TRANSFORMERS_DROPPED if pattern.search(key)), None)


def transformers_key_to_cir(key: str) -> str | None:
    """cir name of a `BlipForImageTextRetrieval` key; None when dropped on purpose (unknown keys come back unchanged
    and the completeness check reports them)."""
    if transformers_drop_reason(key) is not None:
        return None
    if key.startswith(TRANSFORMERS_VIT_PREFIX):
        return VIT_PREFIX + key[len(TRANSFORMERS_VIT_PREFIX):]
    return key


def transformers_config_fields(config: Any) -> list[tuple[str, Any, str, Any]]:
    """(transformers field, its default, cir field, cir value) for every size a transformers BLIP config fixes.

    `config` is a cir `ModelConfig`; defaults are transformers' own (`BlipVisionConfig`, `BlipTextConfig`,
    `BlipConfig`), used when a config.json leaves a field out.
    """
    vision, text = config.vision, config.text
    return [
        ("vision_config.hidden_size", 768, "vision.width", vision.width),
        ("vision_config.intermediate_size", 3072, "vision.width * vision.mlp_ratio", vision.width * vision.mlp_ratio),
        ("vision_config.num_hidden_layers", 12, "vision.depth", vision.depth),
        ("vision_config.num_attention_heads", 12, "vision.heads", vision.heads),
        ("vision_config.image_size", 384, "vision.image_size", vision.image_size),
        ("vision_config.patch_size", 16, "vision.patch_size", vision.patch_size),
        ("vision_config.hidden_act", "gelu", "the ViT activation (exact-erf GELU)", "gelu"),
        ("text_config.vocab_size", 30524, "text.vocab_size", text.vocab_size),
        ("text_config.hidden_size", 768, "text.hidden_size", text.hidden_size),
        ("text_config.encoder_hidden_size", 768, "vision.width (the cross-attention input)", config.encoder_width),
        ("text_config.intermediate_size", 3072, "text.intermediate_size", text.intermediate_size),
        ("text_config.num_hidden_layers", 12, "text.num_layers", text.num_layers),
        ("text_config.num_attention_heads", 8, "text.num_heads", text.num_heads),
        ("text_config.max_position_embeddings", 512, "text.max_positions", text.max_positions),
        ("text_config.layer_norm_eps", 1e-12, "text.layer_norm_eps", text.layer_norm_eps),
        ("text_config.hidden_act", "gelu", "the text activation (exact-erf GELU)", "gelu"),
        ("image_text_hidden_size", 256, "embed_dim", config.embed_dim),
    ]


def transformers_config_value(data: Mapping[str, Any], dotted: str, default: Any) -> Any:
    """`vision_config.hidden_size`-style lookup in a config.json dict, `default` when absent."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def transformers_config_mismatches(data: Mapping[str, Any], config: Any) -> list[str]:
    """One phrase per size where a transformers config.json differs from cir `config` (empty when they agree)."""
    problems = []
    for field, default, cir_field, cir_value in transformers_config_fields(config):
        value = transformers_config_value(data, field, default)
        if value != cir_value:
            problems.append(f"{field} = {value!r} but {cir_field} = {cir_value!r}")
    return problems


# --- stage two initialised from a stage-one state (the reference's loading of BLIP's model_base.pth) ---------------

# Stage-one (cir) keys -> stage-two keys: each attention's `self` into both branches' `self0` / `self1`, its output
# `dense` into `dense0` / `dense1` and its `LayerNorm` into `LayerNormA` / `LayerNormB`; the rest keeps its name.
_STAGE2_BRANCHES = (
    (re.compile(r"^(text_encoder\.encoder\.layer\.\d+\.(?:attention|crossattention))\.self\.(.+)$"),
     (r"\1.self0.\2", r"\1.self1.\2")),
    (re.compile(r"^(text_encoder\.encoder\.layer\.\d+\.(?:attention|crossattention))\.output\.dense\.(.+)$"),
     (r"\1.output.dense0.\2", r"\1.output.dense1.\2")),
    (re.compile(r"^(text_encoder\.encoder\.layer\.\d+\.(?:attention|crossattention))\.output\.LayerNorm\.(.+)$"),
     (r"\1.output.LayerNormA.\2", r"\1.output.LayerNormB.\2")),
)
STAGE2_INIT_DROPPED = (
    (re.compile(r"^(vision_proj|text_proj)\.|^temp$"), "stage two has no projections or temperature"),
)
# Stage-two keys no stage-one state holds: they start as built (random), as in the reference.
STAGE2_INIT_ABSENT = (
    (re.compile(r"\.merge_layer\."), "the concat merge starts random, as in the reference"),
    (re.compile(r"^cls_head\."), "the head starts random, as in the reference"),
)


def stage1_key_to_stage2(key: str) -> tuple[str, ...]:
    """The stage-two keys a stage-one (cir) key initialises: two for a branch-split tensor, none when dropped."""
    if any(pattern.search(key) for pattern, _ in STAGE2_INIT_DROPPED):
        return ()
    for pattern, targets in _STAGE2_BRANCHES:
        if pattern.match(key):
            return tuple(pattern.sub(target, key) for target in targets)
    return (key,)
