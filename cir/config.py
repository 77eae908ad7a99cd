"""Run configuration: one YAML file per (benchmark, model) pair, read into typed sections.

Unknown keys are errors (a typo must not silently fall back to a default). Relative paths are resolved against the
current directory, as a user typing a command expects.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DatasetNotFoundError, FormatError


@dataclass
class BenchmarkConfig:
    name: str = "cirr"
    root: str = "data/synth"
    split: str = "val"
    release: str | None = None
    category: str | None = None
    image_root: str | None = None
    train_split: str = "train"


@dataclass
class ModelConfig:
    name: str = "blip-tiny"
    pretrained: str | None = "blip-tiny-synth"  # a name in cir.pretrained; or give checkpoint paths below
    stage1: str | None = None
    stage2: str | None = None
    device: str = "cpu"
    autocast_bf16: bool = False


@dataclass
class StageOneConfig:
    kind: str = "dense"  # dense | sparse
    k: int | None = None  # pruning depth; None = the benchmark's reference value (50 CIRR, 100 FashionIQ)
    index: str = "flat"  # dense: flat | ivf | hnsw; sparse: csr | seismic
    index_params: dict[str, Any] = field(default_factory=dict)
    sparse_head: str | None = None
    batch_size: int = 64


@dataclass
class StageTwoConfig:
    kind: str | None = "dual-encoder"  # None: stage one only
    batch_size: int = 100
    stage1_weight: float | None = None  # weight of the stage-one score; None: the pretrained model's, else 1/temperature


@dataclass
class TrainConfig:
    out: str = "runs/train"
    seed: int = 0
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    max_queries: int | None = None
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage_one: StageOneConfig = field(default_factory=StageOneConfig)
    stage_two: StageTwoConfig = field(default_factory=StageTwoConfig)
    train_stage1: TrainConfig = field(default_factory=TrainConfig)
    train_stage2: TrainConfig = field(default_factory=TrainConfig)
    train_sparse: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: str = ".cir-cache"
    source: str = "<defaults>"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(f"config file not found: {path} (see configs/ for examples)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise FormatError(f"{path}: not valid YAML ({exc})") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "Config":
        if not isinstance(data, dict):
            raise FormatError(f"{source}: a config is a mapping of sections")
        return _build(cls, {**data, "source": source}, source, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: dict[str, Any], source: str, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FormatError(f"{source}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise FormatError(f"{source}: {prefix}{name} must be a mapping")
            value = _build(type(default), value, source, f"{prefix}{name}.")
        kwargs[name] = value
    return cls(**kwargs)
