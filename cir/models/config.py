"""Model configuration: the sizes and wiring choices of one BLIP-style two-stage model, as frozen dataclasses.

Change a field with `dataclasses.replace`; `to_dict`/`from_dict` round-trip a config through a checkpoint's metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import FormatError

# BLIP's image normalisation (the reference work's "targetpad" preprocessing uses it too).
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    """ViT image encoder: square images cut into square patches, pre-norm blocks, final LayerNorm."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6

    @property
    def num_tokens(self) -> int:
        """Tokens per image: one CLS token plus the patch grid."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class TextConfig:
    """BERT-style text encoder whose layers cross-attend to image tokens (BLIP's "med" config)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int = 30524
    max_positions: int = 512
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """One two-stage model: stage one (retrieval) and stage two (dual-encoder reranker).

    `name` is the registry name (set by `register_model`); it and `description` are labels, not architecture.

    `stage2_average_layers`: stage-two layers below this index merge the two branches' cross-attention outputs by
    averaging; the others by concat + Linear (the reference hard-codes 6).
    `share_stage2_vision`: stage two reuses stage one's ViT tokens (one patch-token cache serves both stages)
    instead of running its own ViT (the reference wiring).
    `tie_stage2_word_embeddings`: stage two's word embeddings are stage one's table, not a copy.
    `stage2_reads_reference`: stage two's cross-attention reads the candidate's tokens followed by their difference
    from the reference image's tokens, patch by patch (what changed), instead of the candidate's tokens alone (the
    reference wiring); it adds no weights.
    """

    vision: VisionConfig
    text: TextConfig
    embed_dim: int
    stage2_average_layers: int = 6
    share_stage2_vision: bool = False
    tie_stage2_word_embeddings: bool = False
    stage2_reads_reference: bool = False
    image_mean: tuple[float, float, float] = BLIP_MEAN
    image_std: tuple[float, float, float] = BLIP_STD
    pad_ratio: float = 1.25
    temp_init: float = 0.07
    name: str = field(default="", compare=False)
    description: str = field(default="", compare=False)

    @property
    def encoder_width(self) -> int:
        """Width of the image tokens the text layers cross-attend to."""
        return self.vision.width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "model config") -> "ModelConfig":
        """Rebuild a config from `to_dict` output; unknown or missing fields raise FormatError naming `source`."""
        try:
            values = dict(data)
            values["vision"] = _build(VisionConfig, values["vision"])
            values["text"] = _build(TextConfig, values["text"])
            for key in ("image_mean", "image_std"):
                if key in values:
                    values[key] = tuple(values[key])
            return _build(cls, values)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{source}: not a valid cir model config ({exc})") from exc


def _build(cls, values: dict):
    """Construct dataclass `cls` from `values`, rejecting names it does not have."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    return cls(**values)


def config_differences(a: ModelConfig, b: ModelConfig) -> list[str]:
    """Dotted names of the fields where two configs differ (empty when equal)."""
    left, right = a.to_dict(), b.to_dict()
    diffs = []
    for key in sorted(set(left) | set(right)):
        if key in ("name", "description"):
            continue
        lv, rv = left.get(key), right.get(key)
        if isinstance(lv, dict) and isinstance(rv, dict):
            diffs += [f"{key}.{sub}" for sub in sorted(set(lv) | set(rv)) if lv.get(sub) != rv.get(sub)]
        elif lv != rv:
            diffs.append(key)
    return diffs
