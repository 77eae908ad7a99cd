"""Pretrained weights by tag, as open_clip names them: `create_model("blip-tiny", pretrained="synth")`.

A tag belongs to one registered model; `list_pretrained()` lists every (model, tag). The shipped tags' files live
under cir/checkpoints. What a tag knows beyond its weights (the sparse heads trained on top of them, the stage-one
weight its stage two was calibrated with, what it was trained on) travels with the model it builds as
`CirModel.pretrained_cfg`, so no stage needs to know the shipped registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CirError


@dataclass(frozen=True)
class PretrainedWeights:
    """One tag: the checkpoint files of a registered model, and what was measured with them."""

    model: str  # a name in the model registry
    tag: str
    stage1: str  # file name under cir/checkpoints
    stage2: str | None = None
    sparse: str | None = None  # the dense-to-sparse heads trained on these stage-one weights
    stage1_weight: float | None = None  # weight of the stage-one score added to stage two's (None: 1 / temperature)
    trained_on: str = ""  # for every report

    def files(self) -> list[Path]:
        """The checkpoint files, stage one first."""
        return [checkpoint_path(name) for name in (self.stage1, self.stage2) if name]

    def config(self) -> dict[str, Any]:
        """What the built model carries as `pretrained_cfg` (paths resolved)."""
        return {
            "tag": self.tag,
            "trained_on": self.trained_on,
            "stage1_weight": self.stage1_weight,
            "sparse_head": str(checkpoint_path(self.sparse)) if self.sparse else None,
        }


_TAGS: dict[tuple[str, str], PretrainedWeights] = {}


def register_pretrained(weights: PretrainedWeights) -> PretrainedWeights:
    """Make `create_model(weights.model, pretrained=weights.tag)` load these weights."""
    _TAGS[(weights.model, weights.tag)] = weights
    return weights


def list_pretrained() -> list[tuple[str, str]]:
    """Every (model name, tag) that `create_model(name, pretrained=tag)` accepts."""
    return sorted(_TAGS)


def get_pretrained(model: str, tag: str) -> PretrainedWeights:
    """The weights of `tag` for `model`; an unknown pair raises CirError listing the model's tags."""
    try:
        return _TAGS[(model, tag)]
    except KeyError:
        tags = ", ".join(t for m, t in sorted(_TAGS) if m == model) or "none"
        raise CirError(f"unknown pretrained tag {tag!r} for model {model!r} (its tags: {tags})") from None


def is_tag(model: str, value: object) -> bool:
    return isinstance(value, str) and (model, value) in _TAGS


def checkpoint_path(file_name: str) -> Path:
    """A shipped checkpoint file under cir/checkpoints."""
    path = Path(str(resources.files("cir") / "checkpoints" / file_name))
    if not path.is_file():
        raise CirError(f"shipped checkpoint missing: {path} (reinstall cir, or train it: docs/training.md)")
    return path


register_pretrained(
    PretrainedWeights(
        model="blip-tiny",
        tag="synth",
        stage1="blip-tiny-synth-stage1.safetensors",
        stage2="blip-tiny-synth-stage2.safetensors",
        sparse="blip-tiny-synth-sparse.safetensors",
        stage1_weight=20.0,  # best of the held-out calibration after the last epoch (runs/stage2/metrics.jsonl)
        trained_on="cir synthetic benchmark (default size, seed 0), train split",
    )
)
