"""Run configuration: one YAML file per (benchmark, model) pair, read into typed sections.

Unknown keys are errors (a typo must not silently fall back to a default): cir checks its own sections, and each
stage checks the settings of its `stage_one` / `stage_two` section, which cir passes to it unchanged. Relative paths
are resolved against the current directory, as a user typing a command expects.
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
    exclude_reference: bool | None = None  # None: the protocol's own rule (CIRR excludes; FashionIQ, CIRCO keep)


@dataclass
class ModelSettings:
    """Which model to build: a registered name and its weights (a pretrained tag, or checkpoint files)."""

    name: str = "blip-tiny"
    pretrained: str | None = "synth"  # a tag of cir.models.list_pretrained() for `name`; or give checkpoint paths below
    stage1: str | None = None  # checkpoint files; when given they replace the tag's weights
    stage2: str | None = None
    device: str = "cpu"
    autocast_bf16: bool = False


@dataclass
class StageSettings:
    """One stage: its registered `kind`, its cut-off `k` (how many of its results the next stage reorders; for stage
    one None means the benchmark's reference value), and every other key of its section, passed unchanged to the
    stage's `from_config(model, cache, **params)`."""

    kind: str
    k: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, source: str, where: str, default_kind: str | None = None) -> "StageSettings":
        if not isinstance(data, dict):
            raise FormatError(f"{source}: {where} must be a mapping (kind, k and the stage's own settings)")
        params = dict(data)
        kind = params.pop("kind", default_kind)
        k = params.pop("k", None)
        if not isinstance(kind, str) or not kind:
            raise FormatError(f"{source}: {where}.kind must name a stage (see `cir stages`), got {kind!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise FormatError(f"{source}: {where}.k must be a whole number >= 1, got {k!r}")
        return cls(kind, k, params)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **({"k": self.k} if self.k is not None else {}), **self.params}


def _default_stage_one() -> StageSettings:
    return StageSettings("dense")


def _default_stage_two() -> list[StageSettings]:
    return [StageSettings("dual-encoder")]


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
    workers: int = 2  # DataLoader processes reading and preprocessing training images (0: the training process)
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast with a GradScaler)
    accumulate: int = 1  # micro-batches per optimiser step: batch_size * accumulate * processes is the batch
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory, more time)
    dropout: float | None = None  # override every dropout probability of the trained modules (None: the model's)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    model: ModelSettings = field(default_factory=ModelSettings)
    stage_one: StageSettings = field(default_factory=_default_stage_one)
    stage_two: list[StageSettings] = field(default_factory=_default_stage_two)  # rerankers, chained in order
    train_stage1: TrainConfig = field(default_factory=TrainConfig)
    train_stage2: TrainConfig = field(default_factory=TrainConfig)
    train_sparse: TrainConfig = field(default_factory=TrainConfig)
    train_sparse_words: TrainConfig = field(default_factory=TrainConfig)  # the word terms on top of train_sparse's
    cache_dir: str | None = ".cir-cache"  # None: no feature cache
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
        data = dict(data)
        stages = {}
        if "stage_one" in data:
            stages["stage_one"] = StageSettings.parse(data.pop("stage_one"), source, "stage_one", "dense")
        if "stage_two" in data:
            stages["stage_two"] = _parse_rerankers(data.pop("stage_two"), source)
        config = _build(cls, {**data, "source": source}, source, "")
        for name, value in stages.items():
            setattr(config, name, value)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as the YAML mapping it reads from (stage sections flat: kind, k and the stage's settings)."""
        data = dataclasses.asdict(self)
        data["stage_one"] = self.stage_one.to_dict()
        data["stage_two"] = [stage.to_dict() for stage in self.stage_two]
        return data


def _parse_rerankers(data: Any, source: str) -> list[StageSettings]:
    """`stage_two`: null (stage one only), one stage's mapping, or a list of them chained in order."""
    if data is None or (isinstance(data, dict) and data.get("kind", "dual-encoder") is None):
        return []
    if isinstance(data, dict):
        return [StageSettings.parse(data, source, "stage_two", "dual-encoder")]
    if isinstance(data, list):
        return [StageSettings.parse(item, source, f"stage_two[{i}]") for i, item in enumerate(data)]
    raise FormatError(f"{source}: stage_two must be a mapping, a list of mappings, or null")


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
