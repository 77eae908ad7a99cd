"""The BLIP-style two-stage model family: configs and registry, tokenizer, preprocessing, both stages, checkpoints.

    from cir.models import create_model, list_models, list_pretrained
    model = create_model("blip-tiny", pretrained="synth")              # the shipped weights (a tag)
    model = create_model("blip-tiny")                                  # random weights
    model = create_model("blip-base", ["stage1.pth", "stage2.pth"])    # reference checkpoints

Names resolve lazily, so listing models or reading configs does not import torch/transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
