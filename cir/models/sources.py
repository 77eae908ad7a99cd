"""Where the published full-size weights come from, so that a missing checkpoint says what to download.

The reference work (Candidate-Reranking-CIR, TMLR 2024) publishes one archive (linked from its DOWNLOAD.md) holding
`models/stage1/{CIRR,fashionIQ}` and `models/stage2/{CIRR,fashionIQ}`; its loader (`src/validate_stage2.py`,
`get_model_path`) reads `saved_models/blip_mean.pt` for CIRR and `saved_models/blip.pt` for FashionIQ in each folder.

transformers' BLIP retrieval checkpoints (`Salesforce/blip-itm-base-coco`, `-large-coco`) come from the Hugging Face
hub: `resolve_checkpoint` downloads one named by its hub id when the string is no local path (a hub cache hit needs
no network).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import CirError

log = logging.getLogger(__name__)

REFERENCE_REPO = "https://github.com/Cuberick-Orion/Candidate-Reranking-CIR"
DOWNLOAD_PAGE = f"DOWNLOAD.md of {REFERENCE_REPO}"

# Path of each published checkpoint inside the reference archive, by (benchmark, part).
PUBLISHED_CHECKPOINTS = {
    ("cirr", "stage1"): "models/stage1/CIRR/saved_models/blip_mean.pt",
    ("cirr", "stage2"): "models/stage2/CIRR/saved_models/blip_mean.pt",
    ("fashioniq", "stage1"): "models/stage1/fashionIQ/saved_models/blip.pt",
    ("fashioniq", "stage2"): "models/stage2/fashionIQ/saved_models/blip.pt",
}

# What a checkpoint of each part is, and the run-config key that names its path.
_PART_DESCRIPTIONS = {
    "stage1": (
        "the stage-one checkpoint: a BLIP_Retrieval file of the Candidate-Reranking-CIR work, a LAVIS/BLIP "
        "retrieval checkpoint, a transformers BlipForImageTextRetrieval folder, or a cir .safetensors file",
        "model.stage1",
    ),
    "stage2": (
        "the stage-two checkpoint: a BLIP_NLVR file of the Candidate-Reranking-CIR work or a cir .safetensors file",
        "model.stage2",
    ),
}
_ANY_PART = (
    "a checkpoint: a stage-one BLIP_Retrieval or stage-two BLIP_NLVR file of the Candidate-Reranking-CIR work, "
    "a LAVIS/BLIP retrieval checkpoint, a transformers BlipForImageTextRetrieval folder, or a cir .safetensors file",
    "model.stage1 / model.stage2",
)


def archive_paths(part: str | None) -> str:
    """The published files of `part` (or of both parts) inside the reference archive, for messages."""
    return ", ".join(path for (_, stage), path in PUBLISHED_CHECKPOINTS.items() if part in (None, stage))


def missing_checkpoint_error(path: Path, part: str | None = None) -> CirError:
    """A one-line error for a checkpoint path that does not exist: what the file is, where to get it, which key."""
    what, key = _PART_DESCRIPTIONS.get(part or "", _ANY_PART)
    label = {"stage1": "stage-one ", "stage2": "stage-two "}.get(part or "", "")
    return CirError(
        f"{label}checkpoint not found: {path}. Expected {what}. The published ones are in the archive linked from "
        f"{DOWNLOAD_PAGE} ({archive_paths(part)}): put the file at {path}, or set {key} in the run config to "
        "where it is"
    )


# `org/name`, as the hub spells repository ids; a string naming a local path never counts.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".json")
HUB_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json")
HUB_TORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def looks_like_hub_id(value: object) -> bool:
    """True for an `org/name` string that is no existing path and does not end like a checkpoint file."""
    if not isinstance(value, str) or not HUB_ID.match(value) or Path(value).exists():
        return False
    return not value.lower().endswith(CHECKPOINT_SUFFIXES)


def resolve_checkpoint(path: str | Path, part: str | None = None) -> Path:
    """The local file or folder of a checkpoint: `path` itself when it exists, a hub snapshot for a hub id;
    otherwise the one-line missing-checkpoint error."""
    if looks_like_hub_id(path):
        return download_from_hub(str(path))
    path = Path(path)
    if not path.exists():
        raise missing_checkpoint_error(path, part)
    return path


def download_from_hub(repo_id: str) -> Path:
    """Snapshot of a transformers BLIP repository (config and weights only) in the hub cache; CirError when the hub
    cannot be reached and no copy is cached."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CirError(
            f"{repo_id!r} is not a local path and huggingface_hub is not installed to fetch it from the hub: "
            "pip install huggingface_hub, or give a local folder saved by save_pretrained"
        ) from None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=["config.json", *HUB_TORCH_FILES]))
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CirError(
            f"{repo_id!r} is not a local path and the Hugging Face hub cannot be reached or has no such repository "
            f"({type(exc).__name__}: {reason}); download it where the hub is reachable "
            f"(huggingface-cli download {repo_id}) and give the local folder"
        ) from None
    log.info("hub checkpoint %s: %s", repo_id, folder)
    return folder
