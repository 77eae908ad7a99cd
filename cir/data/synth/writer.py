"""The dataset writer: plans three splits, renders their images in a process pool, writes the CIRR layout.

Output (byte-identical for the same seed, size and image size, whatever the number of workers):
    captions/cap.synth.<split>.json      CIRR caption entries
    image_splits/split.synth.<split>.json  {name: "./<split>/<name>.png"}
    <split>/<name>.png                   the images
    metadata.json                        version, seed, vocab, phrasings, scenes and edits per split
The whole folder is written under a hidden staging name and renamed at the end, so an interrupted run never leaves
a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import CirError, DatasetNotFoundError, FormatError
from ...io import write_text
from .edits import modification_record
from .phrasing import HELDOUT_CONNECTIVES, HELDOUT_TEMPLATES, TRAIN_CONNECTIVES, TRAIN_TEMPLATES
from .plan import PlannedQuery, SplitPlan, plan_split
from .render import render
from .scene import COLOURS, GRID, OBJECT_FIELDS, SHAPES, SIZES as OBJECT_SIZES, Scene

logger = logging.getLogger(__name__)

GENERATOR = "cir.data.synth"
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
HELDOUT_SPLITS = ("test",)
PNG_COMPRESS_LEVEL = 3  # fast and small enough for 64 px images
# Workers only draw with Pillow, so fork is safe on Linux and, unlike spawn, works from a script without a
# `__main__` guard; elsewhere the platform default.
START_METHOD = "fork" if sys.platform == "linux" else None


@dataclass(frozen=True)
class SizeSpec:
    """Queries per split and distractors (one edit from a reference) per img_set in the evaluation splits."""

    queries: dict[str, int]
    eval_distractors: int = 3


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec({"train": 300, "val": 100, "test": 100}),
    "small": SizeSpec({"train": 4000, "val": 1000, "test": 1000}),
    "default": SizeSpec({"train": 20000, "val": 2000, "test": 2000}),
}


def caption_file(root: Path, split: str) -> Path:
    return root / "captions" / f"cap.synth.{split}.json"


def split_file(root: Path, split: str) -> Path:
    return root / "image_splits" / f"split.synth.{split}.json"


def _dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n"


def _image_seed(seed: int, name: str) -> int:
    """Per-image seed from the dataset seed and the image name, so output does not depend on worker scheduling."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big")


def _render_job(job: tuple[str, Scene, int, int]) -> None:
    path, scene, image_size, seed = job
    render(scene, image_size, seed).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _caption_entry(query: PlannedQuery) -> dict[str, Any]:
    return {
        "pairid": query.pairid,
        "reference": query.reference,
        "target_hard": query.target,
        "target_soft": {query.target: 1.0},
        "caption": query.caption,
        "img_set": {
            "id": query.img_set_id,
            "members": query.members,
            "reference_rank": query.members.index(query.reference),
            "target_rank": query.members.index(query.target),
        },
    }


def _split_metadata(plan: SplitPlan) -> dict[str, Any]:
    return {
        "scenes": {name: scene.to_rows() for name, scene in plan.scenes.items()},
        "img_sets": {str(q.img_set_id): q.members for q in plan.queries},
        "queries": {
            str(q.pairid): {"reference": q.reference, "target": q.target, "caption": q.caption,
                            "edit": modification_record(q.modification), "templates": q.templates, "img_set": q.img_set_id}
            for q in plan.queries
        },
    }


def _metadata(plans: list[SplitPlan], seed: int, size: str, image_size: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "image_size": image_size,
        "vocab": {"shapes": list(SHAPES), "colours": list(COLOURS), "sizes": list(OBJECT_SIZES), "grid": GRID},
        "scene_format": {"object_fields": list(OBJECT_FIELDS), "cells": "row and col from 0 (top, left) to grid - 1"},
        "phrasings": {
            "train": {"templates": {k: list(v) for k, v in TRAIN_TEMPLATES.items()},
                      "connectives": list(TRAIN_CONNECTIVES)},
            "heldout": {"templates": {k: list(v) for k, v in HELDOUT_TEMPLATES.items()},
                        "connectives": list(HELDOUT_CONNECTIVES), "splits": list(HELDOUT_SPLITS)},
        },
        "splits": {plan.split: _split_metadata(plan) for plan in plans},
    }


def _plan_all(seed: int, spec: SizeSpec) -> list[SplitPlan]:
    plans, first_pairid = [], 0
    for split in SPLITS:
        distractors = 0 if split == "train" else spec.eval_distractors
        plan = plan_split(split, spec.queries[split], seed, first_pairid, split in HELDOUT_SPLITS, distractors)
        plans.append(plan)
        first_pairid += len(plan.queries)
    return plans


def _render_all(root: Path, plans: list[SplitPlan], seed: int, image_size: int, workers: int, progress: bool) -> None:
    jobs = []
    for plan in plans:
        (root / plan.split).mkdir(parents=True)
        jobs += [(str(root / plan.split / f"{name}.png"), scene, image_size, _image_seed(seed, name))
                 for name, scene in plan.scenes.items()]
    bar = tqdm(total=len(jobs), desc="rendering", unit="img", disable=not progress)
    with bar:
        if workers <= 1:
            for job in jobs:
                _render_job(job)
                bar.update()
        else:
            with multiprocessing.get_context(START_METHOD).Pool(workers) as pool:
                for _ in pool.imap_unordered(_render_job, jobs, chunksize=256):
                    bar.update()


def _write_dataset(root: Path, seed: int, size: str, image_size: int, workers: int, progress: bool) -> None:
    plans = _plan_all(seed, SIZES[size])
    _render_all(root, plans, seed, image_size, workers, progress)
    for plan in plans:
        write_text(caption_file(root, plan.split), _dump([_caption_entry(q) for q in plan.queries]))
        write_text(split_file(root, plan.split), _dump({name: f"./{plan.split}/{name}.png" for name in plan.scenes}))
    write_text(root / "metadata.json", _dump(_metadata(plans, seed, size, image_size)))


def _read_own_metadata(root: Path) -> dict[str, Any] | None:
    """The metadata of a synthetic dataset at `root`, or None if `root` holds none (or an unreadable one)."""
    try:
        metadata = json.loads((root / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) and metadata.get("generator") == GENERATOR else None


def is_complete(root: Path, size: str = "default", seed: int = 0, image_size: int = 64) -> bool:
    """True if `root` holds a finished dataset of this generator version with these parameters."""
    root = Path(root)
    metadata = _read_own_metadata(root)
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


def _check_replaceable(out: Path) -> None:
    """Refuse to overwrite a folder that is neither empty nor a synthetic dataset (it may be the user's data)."""
    if out.exists() and not out.is_dir():
        raise CirError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and _read_own_metadata(out) is None:
        raise CirError(f"{out} is not empty and holds no synthetic dataset (no cir metadata.json); "
                       "choose another --out or empty it")


def _swap_in(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    retired = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired)


def generate(out: Path, seed: int = 0, size: str = "default", image_size: int = 64, workers: int | None = None,
             *, progress: bool | None = None) -> Path:
    """Write a synthetic CIR benchmark in the CIRR layout to `out` (replacing an older synthetic one) and return it.

    `workers` defaults to the number of CPUs; `progress` (a tqdm bar) defaults to on except for the tiny size."""
    if size not in SIZES:
        raise CirError(f"unknown synthetic size {size!r} (known: {', '.join(SIZES)})")
    if image_size < 16:
        raise CirError(f"image size {image_size} is too small to read shapes; use 16 or more")
    out = Path(out)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        workers = workers or len(os.sched_getaffinity(0))
        logger.info("generating synthetic CIR (%s, seed %d) into %s with %d workers", size, seed, out, workers)
        _write_dataset(staging, seed, size, image_size, workers, size != "tiny" if progress is None else progress)
        _swap_in(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def ensure_synthetic(out: Path, size: str = "default", seed: int = 0, image_size: int = 64) -> Path:
    """Return `out`, generating the dataset first unless a complete one with these parameters is already there."""
    out = Path(out)
    if is_complete(out, size, seed, image_size):
        return out
    return generate(out, seed=seed, size=size, image_size=image_size)


def load_metadata(root: Path) -> dict[str, Any]:
    """The parsed metadata.json of a synthetic dataset (scenes, edits, phrasings); CirError if absent or foreign."""
    root = Path(root)
    path = root / "metadata.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"synthetic dataset metadata not found: {path} (create it with `cir data synth`)")
    metadata = _read_own_metadata(root)
    if metadata is None:
        raise FormatError(f"{path}: not the metadata of a cir synthetic dataset (no generator {GENERATOR!r})")
    return metadata
