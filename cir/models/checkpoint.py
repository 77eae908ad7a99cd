"""Checkpoint files: cir's own safetensors format, plus reading the reference work's and LAVIS/BLIP checkpoints.

cir format: one safetensors file; keys are `stage1.<name>` / `stage2.<name>` (cir module names); one metadata entry,
`cir_checkpoint`, holds JSON with the format version, the model name, its full config and the parts the file holds.  Stage one and stage two may be
saved to separate files and loaded together.  A stage-two table tied to stage one (`tie_stage2_word_embeddings`)
is not written twice.

Reference files: `torch.save` dicts with the weights under "BLIP_Retrieval" / "BLIP_NLVR" (the reference work),
under "model" (LAVIS, BLIP) or a bare state dict; safetensors files with reference names too.

transformers folders: what `BlipForImageTextRetrieval.save_pretrained` writes (config.json with model.safetensors or
pytorch_model.bin, possibly sharded), or a hub id of one (`Salesforce/blip-itm-base-coco`); stage one only. Its
config.json must give the sizes of the model it is loaded into.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from ..errors import CirError, FormatError
from ..io import atomic_path
from .config import ModelConfig
from .convert import (
    STAGE2_INIT_ABSENT,
    STAGE2_INIT_DROPPED,
    TRANSFORMERS_ABSENT,
    convert_reference_state,
    convert_state,
    reference_stage,
    stage1_key_to_stage2,
    transformers_config_mismatches,
    transformers_config_value,
    transformers_drop_reason,
    transformers_key_to_cir,
)
from .sources import missing_checkpoint_error, resolve_checkpoint

if TYPE_CHECKING:
    from torch import nn

    from .factory import CirModel

log = logging.getLogger(__name__)

CIR_FORMAT = 1
METADATA_KEY = "cir_checkpoint"
PARTS = ("stage1", "stage2")
TIED_STAGE2_KEY = "text_encoder.embeddings.word_embeddings.weight"
REFERENCE_WRAPPERS = {"BLIP_Retrieval": "stage1", "BLIP_NLVR": "stage2"}
GENERIC_WRAPPERS = ("model", "state_dict")
LISTED_KEYS = 12
TRANSFORMERS_CONFIG = "config.json"
# Weight files of a transformers folder, in order of preference: one file, or an index of shards.
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TRANSFORMERS_ARCHITECTURE = "BlipForImageTextRetrieval"

PathLike = str | Path


@dataclass
class CheckpointContents:
    """One file's weights, already renamed to cir keys and split by stage."""

    path: Path
    source: str  # "cir", "reference", "lavis" or "transformers"
    parts: dict[str, dict[str, torch.Tensor]]
    origin: dict[str, dict[str, str]] = field(default_factory=dict)  # part -> cir key -> key in the file
    config: ModelConfig | None = None  # cir checkpoints carry the config they were saved with
    dropped: dict[str, str] = field(default_factory=dict)  # key in the file -> why it is not loaded
    kept_initial: dict[str, dict[str, str]] = field(default_factory=dict)  # part -> cir key the file lacks -> why
    source_config: dict | None = None  # a transformers folder's config.json, checked against the model's config


def checkpoint_hash(path: PathLike) -> str:
    """Short stable id of a checkpoint: the first 16 hex digits of the sha256 of its bytes (of a transformers
    folder: of its config.json and weight files, in name order)."""
    path = Path(path)
    files = [path / TRANSFORMERS_CONFIG, *_transformers_weight_files(path)] if path.is_dir() else [_existing(path)]
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def combined_hash(paths: Sequence[PathLike]) -> str:
    """One id for weights spread over several files (a single file keeps its own hash)."""
    hashes = [checkpoint_hash(path) for path in paths]
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("+".join(hashes).encode()).hexdigest()[:16]


def part_state(model: "CirModel", part: str) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds for one part: the module's state dict minus a tied stage-two table."""
    module = getattr(model, part, None)
    if module is None:
        raise CirError(f"model {model.name!r} has no {part}")
    state = module.state_dict()
    if part == "stage2" and model.config.tie_stage2_word_embeddings:
        state.pop(TIED_STAGE2_KEY, None)
    return state


def save_checkpoint(
    model: "CirModel",
    path: PathLike,
    dtype: torch.dtype | None = torch.float16,
    parts: Sequence[str] = PARTS,
) -> Path:
    """Write `parts` of `model` to one cir safetensors file (atomically); floating tensors cast to `dtype`."""
    from safetensors.torch import save_file

    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {tuple(parts)}")
    tensors = {}
    for part in parts:
        for key, tensor in part_state(model, part).items():
            tensor = tensor.detach().cpu()
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            tensors[f"{part}.{key}"] = tensor.contiguous()
    header = {"format": CIR_FORMAT, "model": model.name, "parts": list(parts), "config": model.config.to_dict()}
    # One metadata entry: safetensors writes several in a random order, which would make the file hash unstable.
    metadata = {METADATA_KEY: json.dumps(header, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    log.info("saved %s of %s to %s", "+".join(parts), model.name, path)
    return Path(path)


def read_checkpoint(path: PathLike, part: str | None = None) -> CheckpointContents:
    """Read a cir, reference, LAVIS or transformers checkpoint and rename its keys to cir's; raises FormatError if
    unreadable.

    `path`: a file, a transformers folder, or a hub id of one (downloaded when not cached; CirError when the hub
    cannot be reached). `part` ("stage1" / "stage2") is what the caller expects the file to hold: a missing file's
    message names it.
    """
    path = resolve_checkpoint(path, part)
    if path.is_dir():
        return _read_transformers_folder(path)
    path = _existing(path, part)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path)


def read_checkpoints(
    checkpoint: PathLike | Sequence[PathLike] | None, part: str | None = None
) -> list[CheckpointContents]:
    """`read_checkpoint` for one path, a list of paths, or None (nothing); `part` as in `read_checkpoint` for one
    path, while a list is taken as [stage one's, stage two's] for the messages about a missing file."""
    if checkpoint is None:
        return []
    if isinstance(checkpoint, (str, Path)):
        return [read_checkpoint(checkpoint, part)]
    return [read_checkpoint(path, PARTS[i] if i < len(PARTS) else None) for i, path in enumerate(checkpoint)]


def load_checkpoint(model: "CirModel", checkpoint: PathLike | Sequence[PathLike]) -> list[CheckpointContents]:
    """Load one file or several (e.g. stage one and stage two apart) into `model`; returns what was read."""
    contents = read_checkpoints(checkpoint)
    apply_checkpoints(model, contents)
    return contents


def apply_checkpoints(model: "CirModel", contents: Sequence[CheckpointContents]) -> None:
    """Copy every part held by `contents` into `model`, after checking each key and shape."""
    seen: dict[str, Path] = {}
    for item in contents:
        for part, state in item.parts.items():
            if part in seen:
                raise FormatError(f"{item.path}: {part} weights were already given by {seen[part]}")
            seen[part] = item.path
            module = getattr(model, part)
            if module is None:
                raise FormatError(f"{item.path}: holds {part} weights but model {model.name!r} has no {part}")
            if item.source_config is not None:
                check_transformers_config(item, model.config)
            kept = item.kept_initial.get(part, {})
            expected = {key: tuple(t.shape) for key, t in part_state(model, part).items() if key not in kept}
            found = {key: tuple(t.shape) for key, t in state.items()}
            check_part_keys(found, expected, f"{item.path} ({part})", item.origin.get(part, {}))
            _copy_into(module, state)


def stage2_init_from(contents: CheckpointContents, model: "CirModel") -> CheckpointContents:
    """Stage-two weights for training made from a stage-one checkpoint's weights, as the reference initialises
    BLIP_NLVR from BLIP's model_base.pth: each attention copied into both branches, the ViT, embeddings and FFN as
    they are; `merge_layer` and `cls_head` keep their initial values. Apply it with `apply_checkpoints`, which checks
    every key. A stage two that shares stage one's ViT or word embeddings takes neither from the file."""
    if "stage1" not in contents.parts:
        raise FormatError(f"{contents.path}: no stage-one weights to initialise stage two from")
    if model.stage2 is None:
        raise CirError(f"model {model.name!r} was built without stage two")
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped = dict(contents.dropped)
    shared = {}  # key prefix -> why stage two takes it from stage one rather than from the file
    if model.config.share_stage2_vision:
        shared["visual_encoder."] = "stage two shares stage one's ViT"
    if model.config.tie_stage2_word_embeddings:
        shared[TIED_STAGE2_KEY] = "stage two's word embeddings are stage one's"
    file_names = contents.origin.get("stage1", {})
    for key, tensor in contents.parts["stage1"].items():
        name = file_names.get(key, key)
        targets = stage1_key_to_stage2(key)
        reason = next((why for prefix, why in shared.items() if key.startswith(prefix)), None)
        if reason is None and not targets:
            reason = next(why for pattern, why in STAGE2_INIT_DROPPED if pattern.search(key))
        if reason is not None:
            dropped[name] = reason
            continue
        for target in targets:
            state[target], origin[target] = tensor, name
    kept = {key: why for key in part_state(model, "stage2") for pattern, why in STAGE2_INIT_ABSENT if pattern.search(key)}
    return CheckpointContents(contents.path, contents.source, {"stage2": state}, origin={"stage2": origin},
                              dropped=dropped, kept_initial={"stage2": kept}, source_config=contents.source_config)


def check_transformers_config(item: CheckpointContents, config: ModelConfig) -> None:
    """Refuse a transformers folder whose config.json gives other sizes than `config`, in one line.

    The ViT LayerNorm eps is not refused: transformers' BLIP configs say 1e-5 where BLIP (and cir) use 1e-6, for the
    same weights; cir keeps its own value and says so.
    """
    data, where = item.source_config or {}, item.path / TRANSFORMERS_CONFIG
    problems = transformers_config_mismatches(data, config)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FormatError(f"{where}: {problems[0]} in model {config.name!r}{more}; load it into a model of its sizes")
    eps = transformers_config_value(data, "vision_config.layer_norm_eps", 1e-5)
    if eps != config.vision.layer_norm_eps:
        log.warning("%s: vision_config.layer_norm_eps = %g; %r keeps vision.layer_norm_eps = %g (BLIP's own)",
                    where, eps, config.name, config.vision.layer_norm_eps)


def check_part_keys(
    found: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    where: str,
    origin: Mapping[str, str] | None = None,
) -> None:
    """Raise FormatError listing every missing, unexpected and wrongly shaped key (names as in the file)."""
    origin = origin or {}

    def named(key: str) -> str:
        return origin.get(key, key)

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(named(key) for key in set(found) - set(expected))
    wrong_shape = [
        f"{named(key)}: file {list(found[key])} vs model {list(expected[key])}"
        for key in sorted(set(found) & set(expected))
        if tuple(found[key]) != tuple(expected[key])
    ]
    problems = [
        _listing("missing", missing),
        _listing("unexpected", unexpected),
        _listing("wrong shape", wrong_shape),
    ]
    problems = [text for text in problems if text]
    if problems:
        raise FormatError(f"{where}: weights do not fit the model\n" + "\n".join(problems))


def _listing(label: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:LISTED_KEYS])
    more = f" ... and {len(items) - LISTED_KEYS} more" if len(items) > LISTED_KEYS else ""
    return f"  {label} ({len(items)}): {shown}{more}"


def _copy_into(module: "nn.Module", state: Mapping[str, torch.Tensor]) -> None:
    """Copy checked tensors into the module's own parameters (cast to their dtype and device)."""
    targets = module.state_dict(keep_vars=True)  # keys not in `state` keep their values (`kept_initial`)
    with torch.no_grad():
        for key, tensor in state.items():
            targets[key].copy_(tensor)


def _existing(path: PathLike, part: str | None = None) -> Path:
    path = Path(path)
    if not path.is_file():
        raise missing_checkpoint_error(path, part)
    return path


def _load_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file; FormatError if unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return metadata, {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable safetensors file ({exc})") from exc


def _read_safetensors(path: Path) -> CheckpointContents:
    metadata, tensors = _load_safetensors(path)
    if METADATA_KEY not in metadata:
        stage = REFERENCE_WRAPPERS.get(metadata.get("class", ""), reference_stage(tensors))
        return _reference_contents(path, tensors, stage, "reference")
    return _cir_contents(path, tensors, metadata[METADATA_KEY])


def _cir_contents(path: Path, tensors: dict[str, torch.Tensor], header_json: str) -> CheckpointContents:
    try:
        header = json.loads(header_json)
        version, config_data, declared = header["format"], header["config"], header["parts"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: unreadable {METADATA_KEY!r} metadata ({exc})") from exc
    if version != CIR_FORMAT:
        raise FormatError(f"{path}: cir checkpoint format {version!r}, this cir reads format {CIR_FORMAT}")
    config = ModelConfig.from_dict(config_data, source=f"{path} metadata")
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in declared if part in PARTS}
    for key, tensor in tensors.items():
        part, _, name = key.partition(".")
        if part not in parts:
            raise FormatError(f"{path}: key {key!r} is not under a declared part ({', '.join(parts)})")
        parts[part][name] = tensor
    return CheckpointContents(path, "cir", parts, config=config)


def _load_torch(path: Path) -> dict:
    """The dict a `torch.save` file holds (tensors and plain data only); FormatError otherwise."""
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise FormatError(
            f"{path}: not a readable torch checkpoint of tensors ({str(exc).splitlines()[0]}); "
            "cir does not unpickle arbitrary objects: re-save the state dict alone"
        ) from exc
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    return obj


def _read_torch(path: Path) -> CheckpointContents:
    obj = _load_torch(path)
    for wrapper, stage in REFERENCE_WRAPPERS.items():
        if wrapper in obj:
            return _reference_contents(path, obj[wrapper], stage, "reference")
    for wrapper in GENERIC_WRAPPERS:
        if isinstance(obj.get(wrapper), dict):
            state = obj[wrapper]
            return _reference_contents(path, state, reference_stage(state), "lavis")
    if obj and all(isinstance(value, torch.Tensor) for value in obj.values()):
        return _reference_contents(path, obj, reference_stage(obj), "reference")
    top = ", ".join(sorted(map(str, obj))[:LISTED_KEYS])
    raise FormatError(
        f"{path}: no weights found; expected a state dict or one under 'BLIP_Retrieval', 'BLIP_NLVR', "
        f"'model' or 'state_dict' (top-level keys: {top})"
    )


def _reference_contents(path: Path, state: Mapping, stage: str, source: str) -> CheckpointContents:
    state = _strip_prefix(dict(state), "module.")
    _check_tensors(path, state)
    converted, origin = convert_reference_state(state)
    return CheckpointContents(path, source, {stage: converted}, origin={stage: origin})


def _check_tensors(path: Path, state: Mapping) -> None:
    not_tensors = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise FormatError(f"{path}: {len(not_tensors)} entries are not tensors, e.g. {', '.join(not_tensors[:2])}")


def _read_transformers_folder(folder: Path) -> CheckpointContents:
    """Stage-one weights of a `BlipForImageTextRetrieval.save_pretrained` folder, renamed to cir keys; the keys
    dropped on purpose and the cir keys it lacks are recorded with the reason."""
    data = _transformers_config(folder)
    state: dict[str, torch.Tensor] = {}
    for file in _transformers_weight_files(folder):
        state.update(_load_safetensors(file)[1] if file.suffix == ".safetensors" else _load_torch(file))
    _check_tensors(folder, state)
    converted, origin = convert_state(state, transformers_key_to_cir)
    dropped = {key: reason for key in state if (reason := transformers_drop_reason(key)) is not None}
    kept = {key: reason for key, reason in TRANSFORMERS_ABSENT.items() if key not in converted}
    log.info("%s: transformers BLIP checkpoint, %d tensors loaded, %d dropped (%s), kept at initial value: %s",
             folder, len(converted), len(dropped), ", ".join(sorted(set(dropped.values()))) or "none",
             ", ".join(kept) or "none")
    return CheckpointContents(folder, "transformers", {"stage1": converted}, origin={"stage1": origin},
                              dropped=dropped, kept_initial={"stage1": kept}, source_config=data)


def _transformers_config(folder: Path) -> dict:
    """config.json of a transformers folder, refused unless it describes a BLIP retrieval model."""
    path = folder / TRANSFORMERS_CONFIG
    if not path.is_file():
        raise FormatError(f"{folder}: a folder but not a transformers checkpoint (no {TRANSFORMERS_CONFIG})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object, found {type(data).__name__}")
    model_type, architectures = data.get("model_type"), data.get("architectures") or []
    if model_type != "blip" or (architectures and TRANSFORMERS_ARCHITECTURE not in architectures):
        found = ", ".join(map(str, architectures)) or f"model_type {model_type!r}"
        raise FormatError(f"{path}: {found}; cir reads {TRANSFORMERS_ARCHITECTURE} checkpoints "
                          "(model_type 'blip', e.g. Salesforce/blip-itm-base-coco)")
    return data


def _transformers_weight_files(folder: Path) -> list[Path]:
    """The weight file(s) of a transformers folder: a single file, or the shards an index names."""
    for name in TRANSFORMERS_WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{path}: not a readable shard index ({exc})") from exc
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise FormatError(f"{path}: {len(missing)} shards missing, e.g. {', '.join(missing[:2])}")
        return [folder / shard for shard in shards]
    raise FormatError(f"{folder}: no weights ({' or '.join(TRANSFORMERS_WEIGHTS[::2])})")


def _strip_prefix(state: dict, prefix: str) -> dict:
    """Drop a DistributedDataParallel `module.` prefix carried by every key."""
    if state and all(str(key).startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state
