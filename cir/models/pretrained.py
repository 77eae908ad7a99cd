"""Named pretrained pipelines shipped inside the package (weights under cir/checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import CirError


@dataclass(frozen=True)
class Pretrained:
    model: str  # a name in the model registry
    stage1: str  # file name under cir/checkpoints
    stage2: str | None
    sparse: str | None  # the dense-to-sparse heads
    stage1_weight: float | None  # weight of the stage-one score added to stage two's; None: 1 / stage-one temperature
    trained_on: str  # what the weights were trained on, for every report


PRETRAINED: dict[str, Pretrained] = {
    "blip-tiny-synth": Pretrained(
        model="blip-tiny",
        stage1="blip-tiny-synth-stage1.safetensors",
        stage2="blip-tiny-synth-stage2.safetensors",
        sparse="blip-tiny-synth-sparse.safetensors",
        stage1_weight=20.0,  # best of the held-out calibration after the last epoch (runs/stage2/metrics.jsonl)
        trained_on="cir synthetic benchmark (default size, seed 0), train split",
    ),
}


def checkpoint_path(file_name: str) -> Path:
    path = Path(str(resources.files("cir") / "checkpoints" / file_name))
    if not path.is_file():
        raise CirError(f"shipped checkpoint missing: {path} (reinstall cir, or train it: see README 'Reproducing the shipped models')")
    return path


def get_pretrained(name: str) -> Pretrained:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise CirError(f"unknown pretrained model {name!r} (known: {', '.join(sorted(PRETRAINED))})") from None


def default_sparse_head(name: str = "blip-tiny-synth") -> Path:
    spec = get_pretrained(name)
    if spec.sparse is None:
        raise CirError(f"pretrained model {name!r} ships no sparse head: give stage_one.sparse_head in the config")
    return checkpoint_path(spec.sparse)


def load_pretrained_model(name: str, device: str = "cpu"):
    from . import create_model

    spec = get_pretrained(name)
    stage2 = checkpoint_path(spec.stage2) if spec.stage2 else None
    return create_model(spec.model, checkpoint=checkpoint_path(spec.stage1), stage2_checkpoint=stage2, device=device)


def build_pipeline(name: str = "blip-tiny-synth", cache_dir: str | None = None, k: int = 50, device: str = "cpu"):
    """Dense stage one % k >> dual-encoder stage two, from the named shipped weights."""
    from ..cache import FeatureCache
    from ..registry import rerankers, retrievers

    spec = get_pretrained(name)
    model = load_pretrained_model(name, device)
    cache = FeatureCache(cache_dir) if cache_dir else None
    retriever = retrievers.get("dense")(model, cache, device=device)
    if model.stage2 is None:
        return retriever % k
    return retriever % k >> rerankers.get("dual-encoder")(model, cache, spec.stage1_weight, device=device)
