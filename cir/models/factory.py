"""`CirModel` (both stages with their tokenizer and preprocessing) and the `create_model` / `load_model` factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import nn

from ..errors import CirError, FormatError
from .checkpoint import PARTS, CheckpointContents, apply_checkpoints, combined_hash, read_checkpoints
from .config import ModelConfig, config_differences
from .preprocess import ImagePreprocessor
from .pretrained import get_pretrained, is_tag
from .registry import get_model_config
from .sources import looks_like_hub_id
from .stage1 import Stage1Model
from .stage2 import Stage2Model
from .tokenizer import BlipTokenizer

if TYPE_CHECKING:
    from ..config import ModelSettings

log = logging.getLogger(__name__)

Pretrained = str | Path | Sequence[str | Path] | None


@lru_cache(maxsize=1)
def default_tokenizer() -> BlipTokenizer:
    """One shared tokenizer for the shipped vocabulary (it holds no per-model state)."""
    return BlipTokenizer()


@dataclass(eq=False)
class CirModel:
    """A two-stage model ready to use: `stage2` is None when only stage one was built.

    `weights_id` is a short hash of the checkpoint file(s) the weights came from (None when any part holds random
    weights): a cache of gallery features is valid for one `(name, weights_id)`. `pretrained_cfg` is what a
    pretrained tag knows beyond the weights (`sparse_head`, `stage1_weight`, `trained_on`); empty otherwise.
    `autocast_bf16`: run under bfloat16 autocast.
    """

    config: ModelConfig
    stage1: Stage1Model
    stage2: Stage2Model | None
    tokenizer: BlipTokenizer
    preprocess: ImagePreprocessor
    weights_id: str | None = None
    pretrained_cfg: dict = field(default_factory=dict)
    autocast_bf16: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def modules(self) -> Iterator[nn.Module]:
        yield self.stage1
        if self.stage2 is not None:
            yield self.stage2

    def to(self, device: torch.device | str) -> "CirModel":
        for module in self.modules():
            module.to(device)
        return self

    def eval(self) -> "CirModel":
        return self.train(False)

    def train(self, mode: bool = True) -> "CirModel":
        for module in self.modules():
            module.train(mode)
        return self

    @property
    def device(self) -> torch.device:
        return self.stage1.temp.device

    def num_parameters(self) -> int:
        """Distinct parameters of both stages (a tied table counts once)."""
        unique = {id(p): p.numel() for module in self.modules() for p in module.parameters()}
        return sum(unique.values())

    def stage2_image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image tokens that stage two consumes (reference and candidates): its own ViT, or stage one's if shared."""
        if self.config.share_stage2_vision:
            return self.stage1.image_tokens(pixels)
        if self.stage2 is None:
            raise RuntimeError(f"model {self.name!r} was built without stage two")
        return self.stage2.image_tokens(pixels)


def build_model(config: ModelConfig, with_stage2: bool = True) -> CirModel:
    """A randomly initialised model for `config` (train mode, as torch builds modules)."""
    stage1 = Stage1Model(config)
    stage2 = Stage2Model(config) if with_stage2 else None
    if stage2 is not None:
        stage2.embeddings_from(stage1)
    preprocess = ImagePreprocessor(config.vision.image_size, config.image_mean, config.image_std, config.pad_ratio)
    return CirModel(config, stage1, stage2, default_tokenizer(), preprocess)


def create_model(
    name: str,
    pretrained: Pretrained = None,
    *,
    stages: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    autocast_bf16: bool = False,
) -> CirModel:
    """Build the registered model `name`, load its weights, and return it in eval mode on `device`.

    `pretrained`, as in open_clip: a tag of `list_pretrained()` for this model (e.g. "synth" for "blip-tiny": both
    stages' shipped weights, and what the tag knows beyond them as `model.pretrained_cfg`); a checkpoint file (cir
    safetensors, the reference work's `BLIP_Retrieval` / `BLIP_NLVR`, LAVIS/BLIP; a single file is taken as stage
    one's); a transformers `BlipForImageTextRetrieval` folder (`save_pretrained`) or its hub id (e.g.
    "Salesforce/blip-itm-base-coco", downloaded when the hub is reachable), stage one only, its config.json checked
    against `name`'s sizes; or a list of files (stage one and stage two saved apart). None: random weights.
    `stages`: the parts to build. By default both when no file is given, else exactly the parts the files hold
    (weights are never silently random). Naming the parts builds them all and loads what the files hold, so
    `stages=("stage1", "stage2")` with a stage-one file starts a fresh stage two for training.
    `autocast_bf16`: the stages run the model under bfloat16 autocast (the feature cache keys by it).
    Any missing or unexpected key and any wrong shape raise FormatError naming the file and the keys; an unknown
    tag or a missing file raises CirError saying which tags exist and where the published files are.
    """
    config = get_model_config(name)
    pretrained_cfg: dict = {}
    if is_tag(name, pretrained):
        spec = get_pretrained(name, pretrained)
        pretrained, pretrained_cfg = spec.files(), spec.config()
    elif (isinstance(pretrained, str) and not Path(pretrained).exists() and not Path(pretrained).suffix
          and not looks_like_hub_id(pretrained)):
        get_pretrained(name, pretrained)  # neither a tag, a file nor a hub id: the error lists the tags
    first_part = "stage1" if isinstance(pretrained, (str, Path)) else None
    contents = read_checkpoints(pretrained, first_part)
    for item in contents:
        if item.config is not None:
            differences = config_differences(config, item.config)
            if differences:
                raise FormatError(
                    f"{item.path}: saved for a model config that differs from {name!r} in "
                    f"{', '.join(differences)}; use load_model() to build the saved config"
                )
    model = _assemble(config, contents, stages).to(device)
    model.pretrained_cfg, model.autocast_bf16 = pretrained_cfg, autocast_bf16
    return model


def model_from_settings(settings: "ModelSettings") -> CirModel:
    """The model a config's `model` section names: its checkpoint files when given, else its pretrained tag."""
    if settings.stage2 and not settings.stage1:
        raise CirError("model.stage2 is set without model.stage1: stage two needs stage one's checkpoint too")
    files = [path for path in (settings.stage1, settings.stage2) if path]
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise CirError(f"model.device is {settings.device!r} but this torch build sees no CUDA device: use cpu")
    return create_model(settings.name, files or settings.pretrained, device=settings.device,
                        autocast_bf16=settings.autocast_bf16)


def load_model(
    checkpoint: str | Path | Sequence[str | Path],
    *,
    stages: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
) -> CirModel:
    """Build a model from the config stored in cir checkpoint(s) (for configs that are not registered)."""
    contents = read_checkpoints(checkpoint)
    if not contents:
        raise ValueError("load_model needs at least one checkpoint file")
    configured = [item for item in contents if item.config is not None]
    if not configured:
        raise FormatError(
            f"{contents[0].path}: a {contents[0].source} checkpoint stores no cir config; "
            "use create_model(name, checkpoint)"
        )
    first = configured[0]
    for item in configured[1:]:
        differences = config_differences(first.config, item.config)
        if differences:
            raise FormatError(f"{item.path} and {first.path} were saved for different configs ({', '.join(differences)})")
    return _assemble(first.config, contents, stages).to(device)


def _assemble(config: ModelConfig, contents: list[CheckpointContents], stages: Sequence[str] | None) -> CirModel:
    held = [part for part in PARTS if any(part in item.parts for item in contents)]
    if stages is None:
        stages = held if contents else PARTS
        if contents and "stage1" not in held:
            files = ", ".join(str(item.path) for item in contents)
            raise FormatError(f"{files}: no stage-one weights (stage two needs stage one's text encoder for z_t)")
    wanted = tuple(stages)
    if "stage1" not in wanted or any(part not in PARTS for part in wanted):
        raise ValueError(f"stages must include 'stage1' and be among {PARTS}, got {wanted}")
    model = build_model(config, with_stage2="stage2" in wanted)
    apply_checkpoints(model, [_only(item, wanted) for item in contents])
    fresh = [part for part in wanted if part not in held]
    if contents:
        log.info("loaded %s (%s) from %s", config.name, "+".join(held), ", ".join(str(i.path) for i in contents))
        if fresh:
            log.info("%s: %s randomly initialised (not in the checkpoint)", config.name, "+".join(fresh))
        else:
            model.weights_id = combined_hash([item.path for item in contents])
    return model.eval()


def _only(item: CheckpointContents, parts: Sequence[str]) -> CheckpointContents:
    """The contents restricted to the parts being built (stage two of a file can be left out on request)."""
    return replace(item, parts={part: state for part, state in item.parts.items() if part in parts})
