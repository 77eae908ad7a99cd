"""The BLIP-style two-stage model family: configs and registry, tokenizer, preprocessing, both stages, checkpoints.

    from cir.models import create_model, list_models, list_pretrained
    model = create_model("blip-tiny", pretrained="synth")              # the shipped weights (a tag)
    model = create_model("blip-tiny")                                  # random weights
    model = create_model("blip-base", ["stage1.pth", "stage2.pth"])    # reference checkpoints

Names resolve lazily, so listing models or reading configs does not import torch/transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "BLIP_MEAN": "config",
    "BLIP_STD": "config",
    "ModelConfig": "config",
    "TextConfig": "config",
    "VisionConfig": "config",
    "get_model_config": "registry",
    "list_models": "registry",
    "register_model": "registry",
    "BlipTokenizer": "tokenizer",
    "ImagePreprocessor": "preprocess",
    "Stage1Model": "stage1",
    "Stage2Model": "stage2",
    "PretrainedWeights": "pretrained",
    "get_pretrained": "pretrained",
    "list_pretrained": "pretrained",
    "register_pretrained": "pretrained",
    "CirModel": "factory",
    "build_model": "factory",
    "create_model": "factory",
    "load_model": "factory",
    "model_from_settings": "factory",
    "checkpoint_hash": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "stage2_init_from": "checkpoint",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
