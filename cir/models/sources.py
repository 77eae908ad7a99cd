"""Where the published full-size weights come from, so that a missing checkpoint says what to download.

The reference work (Candidate-Reranking-CIR, TMLR 2024) publishes one archive (linked from its DOWNLOAD.md) holding
`models/stage1/{CIRR,fashionIQ}` and `models/stage2/{CIRR,fashionIQ}`; its loader (`src/validate_stage2.py`,
`get_model_path`) reads `saved_models/blip_mean.pt` for CIRR and `saved_models/blip.pt` for FashionIQ in each folder.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CirError

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
        "retrieval checkpoint, or a cir .safetensors file",
        "model.stage1",
    ),
    "stage2": (
        "the stage-two checkpoint: a BLIP_NLVR file of the Candidate-Reranking-CIR work or a cir .safetensors file",
        "model.stage2",
    ),
}
_ANY_PART = (
    "a checkpoint: a stage-one BLIP_Retrieval or stage-two BLIP_NLVR file of the Candidate-Reranking-CIR work, "
    "a LAVIS/BLIP retrieval checkpoint, or a cir .safetensors file",
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
