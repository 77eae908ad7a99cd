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


def complete_splits(root: Path, size: str = "default", seed: int = 0, image_size: int = 64) -> tuple[str, ...]:
    """The splits `root` holds whole (listed in metadata.json, annotations written, every image there), for a dataset
    of this generator version with these parameters; none for anything else."""
    root = Path(root)
    metadata = read_own_metadata(root)
    wanted = {"version": GENERATOR_VERSION, "seed": seed, "size": size, "image_size": image_size}
    if metadata is None or any(metadata.get(k) != v for k, v in wanted.items()):
        return ()
    listed = metadata.get("splits", {})
    return tuple(split for split in SPLITS if split in listed and _split_is_whole(root, split, len(listed[split]["scenes"])))


def _split_is_whole(root: Path, split: str, images: int) -> bool:
    if not (caption_file(root, split).is_file() and split_file(root, split).is_file()):
        return False
    return (root / split).is_dir() and sum(1 for _ in os.scandir(root / split)) == images


def is_complete(root: Path, size: str = "default", seed: int = 0, image_size: int = 64, splits=SPLITS) -> bool:
    """True if `root` holds `splits` (all three by default) of the dataset with these parameters, whole."""
    return set(splits) <= set(complete_splits(root, size, seed, image_size))


def missing_split_hint(root: Path, split: str) -> str | None:
    """What to run when a synthetic dataset at `root` lacks `split` (None if `root` holds no synthetic dataset)."""
    metadata = read_own_metadata(Path(root))
    if metadata is None:
        return None
    have = ", ".join(metadata.get("splits", {})) or "none"
    image_size = "" if metadata.get("image_size") == 64 else f" --image-size {metadata.get('image_size')}"
    return (f"{root} holds the synthetic splits {have} but not {split!r}: write them all with "
            f"`cir data synth --out {root} --size {metadata.get('size')} --seed {metadata.get('seed')}{image_size}`")


def write_command(root: Path, splits=SPLITS, size: str = "default", seed: int = 0, image_size: int = 64) -> str:
    """The `cir data synth` command line that writes `splits` of the dataset with these parameters to `root`."""
    command = f"cir data synth --out {root}"
    if tuple(splits) != SPLITS:
        command += f" --splits {' '.join(s for s in SPLITS if s in splits)}"
    if size != "default":
        command += f" --size {size}"
    if seed != 0:
        command += f" --seed {seed}"
    if image_size != 64:
        command += f" --image-size {image_size}"
    return command


def synthetic_hint(root: Path, release: str | None, split: str | None = None) -> str | None:
    """What to run for a missing synthetic folder or split: for release "synth" or a folder whose metadata.json is
    this generator's; None for anything else (e.g. a real CIRR folder)."""
    root = Path(root)
    if split is not None and (hint := missing_split_hint(root, split)):
        return hint
    if release == "synth" or read_own_metadata(root) is not None:
        return f"cir's synthetic benchmark is generated, not downloaded: write it with `{write_command(root)}`"
    return None


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


def split_metadata(root: Path, split: str) -> dict[str, Any]:
    """One split's scenes, img_sets and queries from metadata.json; DatasetNotFoundError if it was not generated."""
    splits = load_metadata(root)["splits"]
    if split not in splits:
        raise DatasetNotFoundError(missing_split_hint(Path(root), split))
    return splits[split]
