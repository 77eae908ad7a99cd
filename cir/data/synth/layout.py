"""The on-disk layout of a synthetic dataset: file names, its metadata.json, and whether a folder is complete."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...errors import DatasetNotFoundError, FormatError

GENERATOR = "cir.data.synth"
GENERATOR_VERSION = 3  # bump whenever the same seed would give different files
SPLITS = ("train", "val", "test")


def caption_file(root: Path, split: str) -> Path:
    return root / "captions" / f"cap.synth.{split}.json"


def split_file(root: Path, split: str) -> Path:
    return root / "image_splits" / f"split.synth.{split}.json"


def read_own_metadata(root: Path) -> dict[str, Any] | None:
    """The metadata of a synthetic dataset at `root`, or None if `root` holds none (or an unreadable one)."""
    try:
        metadata = json.loads((root / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) and metadata.get("generator") == GENERATOR else None


def is_complete(root: Path, size: str = "default", seed: int = 0, image_size: int = 64) -> bool:
    """True if `root` holds a finished dataset of this generator version with these parameters."""
    root = Path(root)
    metadata = read_own_metadata(root)
    wanted = {"version": GENERATOR_VERSION, "seed": seed, "size": size, "image_size": image_size}
    if metadata is None or any(metadata.get(k) != v for k, v in wanted.items()):
        return False
    for split in SPLITS:
        if not (caption_file(root, split).is_file() and split_file(root, split).is_file()):
            return False
        expected = len(metadata.get("splits", {}).get(split, {}).get("scenes", {}))
        if not (root / split).is_dir() or sum(1 for _ in os.scandir(root / split)) != expected:
            return False
    return True


def load_metadata(root: Path) -> dict[str, Any]:
    """The parsed metadata.json of a synthetic dataset (scenes, edits, phrasings); CirError if absent or foreign."""
    root = Path(root)
    path = root / "metadata.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"synthetic dataset metadata not found: {path} (create it with `cir data synth`)")
    metadata = read_own_metadata(root)
    if metadata is None:
        raise FormatError(f"{path}: not the metadata of a cir synthetic dataset (no generator {GENERATOR!r})")
    return metadata
