"""The dataset writer: plans the splits, renders their images in a process pool, writes the CIRR layout.

Output (byte-identical for the same seed, size and image size, whatever the number of workers, and whether the
splits were written together or one at a time):
    captions/cap.synth.<split>.json      CIRR caption entries
    image_splits/split.synth.<split>.json  {name: "./<split>/<name>.png"}
    <split>/<name>.png                   the images
    metadata.json                        version, seed, vocab, phrasings, scenes and edits per split
A new folder is written under a hidden temporary name and renamed at the end (cir.io.atomic_directory); a split added
to an existing folder is listed in metadata.json only once its files are in place. Either way an interrupted run
never leaves a split that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import CirError
from ...io import atomic_directory, write_text
from .edits import modification_record
from .layout import GENERATOR, GENERATOR_VERSION, SPLITS, caption_file, complete_splits, read_own_metadata, split_file
from .phrasing import HELDOUT_CONNECTIVES, HELDOUT_TEMPLATES, TRAIN_CONNECTIVES, TRAIN_TEMPLATES
from .plan import PlannedQuery, SplitPlan, plan_split
from .render import render
from .scene import COLOURS, GRID, OBJECT_FIELDS, SHAPES, SIZES as OBJECT_SIZES, Scene

logger = logging.getLogger(__name__)

HELDOUT_SPLITS = ("test",)
PNG_COMPRESS_LEVEL = 3  # fast and small enough for 64 px images
# Workers only draw with Pillow, so fork is safe on Linux and, unlike spawn, works from a script without a
# `__main__` guard; elsewhere the platform default.
START_METHOD = "fork" if sys.platform == "linux" else None


@dataclass(frozen=True)
class SizeSpec:
    """Queries per split, and distractors (scenes one edit from the reference) per query in the evaluation splits."""

    queries: dict[str, int]
    eval_distractors: int = 3


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec({"train": 300, "val": 100, "test": 100}),
    "small": SizeSpec({"train": 4000, "val": 1000, "test": 1000}),
    "default": SizeSpec({"train": 20000, "val": 2000, "test": 2000}),
}


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
            str(q.pairid): {
                "reference": q.reference, "target": q.target, "caption": q.caption, "img_set": q.img_set_id,
                "edit": modification_record(q.modification), "templates": q.templates,
            }
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


def _first_pairids(spec: SizeSpec) -> dict[str, int]:
    """Pair ids run on across the splits in SPLITS order, so each split can be planned on its own."""
    firsts, first = {}, 0
    for split in SPLITS:
        firsts[split], first = first, first + spec.queries[split]
    return firsts


def _plan(seed: int, spec: SizeSpec, splits: tuple[str, ...], progress: bool) -> list[SplitPlan]:
    firsts = _first_pairids(spec)
    with tqdm(total=sum(spec.queries[s] for s in splits), desc="planning", unit="query", disable=not progress) as bar:
        return [
            plan_split(split, spec.queries[split], seed, firsts[split], split in HELDOUT_SPLITS,
                       0 if split == "train" else spec.eval_distractors, advance=bar.update)
            for split in splits
        ]


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


def _write_annotations(root: Path, plan: SplitPlan) -> None:
    write_text(caption_file(root, plan.split), _dump([_caption_entry(q) for q in plan.queries]))
    write_text(split_file(root, plan.split), _dump({name: f"./{plan.split}/{name}.png" for name in plan.scenes}))


def _write_dataset(root: Path, plans: list[SplitPlan], seed: int, size: str, image_size: int, workers: int,
                   progress: bool) -> None:
    _render_all(root, plans, seed, image_size, workers, progress)
    for plan in plans:
        _write_annotations(root, plan)
    write_text(root / "metadata.json", _dump(_metadata(plans, seed, size, image_size)))


def _add_splits(root: Path, plans: list[SplitPlan], image_size: int, workers: int, progress: bool) -> None:
    """Render `plans` beside `root`, move each split into place, then list them in metadata.json (written last, so
    an interrupted run leaves the split unlisted and the next call redoes it)."""
    metadata = read_own_metadata(root)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        _render_all(staging, plans, metadata["seed"], image_size, workers, progress)
        for plan in plans:
            if (root / plan.split).exists():
                shutil.rmtree(root / plan.split)
            os.replace(staging / plan.split, root / plan.split)
            _write_annotations(root, plan)
        metadata["splits"].update((plan.split, _split_metadata(plan)) for plan in plans)
        write_text(root / "metadata.json", _dump(metadata))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_replaceable(out: Path, flag: str) -> None:
    """Refuse to replace a folder that is neither empty nor a synthetic dataset (it may be the user's data).

    `flag` is the option the user gave the folder with (`cir data synth --out`, `cir demo --data`)."""
    if out.is_dir() and any(out.iterdir()) and read_own_metadata(out) is None:
        raise CirError(f"{out} is not empty and holds no synthetic dataset (no cir metadata.json); "
                       f"choose another {flag} or empty it")


def _check_same_parameters(out: Path, wanted: dict[str, Any], flag: str) -> None:
    """Refuse to replace, implicitly, a synthetic dataset written with other parameters: its splits would be lost.

    Only `generate` (`cir data synth --out`, asked for in so many words) replaces one."""
    metadata = read_own_metadata(out)
    if metadata is None or not metadata.get("splits"):
        return
    names = {"size": "size", "seed": "seed", "image_size": "image size", "version": "generator version"}
    held = [f"{names[k]} {metadata.get(k)}" for k, v in wanted.items() if metadata.get(k) != v]
    if not held:
        return
    options = f" --size {wanted['size']}"
    options += f" --seed {wanted['seed']}" if wanted["seed"] != 0 else ""
    options += f" --image-size {wanted['image_size']}" if wanted["image_size"] != 64 else ""
    splits = ", ".join(s for s in SPLITS if s in metadata["splits"])
    raise CirError(f"{out} holds the synthetic benchmark at {', '.join(held)} (splits {splits}), not the "
                   f"{', '.join(f'{names[k]} {v}' for k, v in wanted.items() if metadata.get(k) != v)} asked for; "
                   f"nothing was changed: choose another {flag} folder, or replace it with "
                   f"`cir data synth --out {out}{options}`")


def check_can_write(out: Path, size: str = "default", seed: int = 0, image_size: int = 64, *,
                    flag: str = "--out") -> None:
    """Raise the CirError `ensure_synthetic` would raise rather than replace `out` (a foreign folder, or a synthetic
    dataset with other parameters), so that a caller can refuse before announcing the work."""
    out = Path(out)
    if complete_splits(out, size, seed, image_size):
        return  # splits are added to it
    _check_replaceable(out, flag)
    _check_same_parameters(out, {"size": size, "seed": seed, "image_size": image_size, "version": GENERATOR_VERSION},
                           flag)


def _ordered_splits(splits) -> tuple[str, ...]:
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise CirError(f"unknown synthetic splits {unknown or '(none given)'} (known: {', '.join(SPLITS)})")
    return tuple(s for s in SPLITS if s in splits)


def _check_parameters(size: str, image_size: int) -> None:
    if size not in SIZES:
        raise CirError(f"unknown synthetic size {size!r} (known: {', '.join(SIZES)})")
    if image_size < 16:
        raise CirError(f"image size {image_size} is too small to read shapes; use 16 or more")


def generate(out: Path, seed: int = 0, size: str = "default", image_size: int = 64, workers: int | None = None,
             splits=SPLITS, *, progress: bool | None = None, flag: str = "--out") -> Path:
    """Write a synthetic CIR benchmark in the CIRR layout to `out` (replacing an older synthetic one) and return it.

    `splits` may name a subset (what an evaluation needs; `ensure_synthetic` adds the others later, and the files
    are the same as a full run's). `workers` defaults to the number of CPUs; `progress` (a tqdm bar) defaults to on
    except for the tiny size; `flag` is the option that named `out`, for messages."""
    _check_parameters(size, image_size)
    splits = _ordered_splits(splits)
    out = Path(out)
    workers = workers or os.cpu_count() or 1
    progress = size != "tiny" if progress is None else progress
    _check_replaceable(out, flag)
    with atomic_directory(out) as staging:
        logger.info("generating synthetic CIR (%s, seed %d, %s) into %s with %d workers",
                    size, seed, "/".join(splits), out, workers)
        plans = _plan(seed, SIZES[size], splits, progress)
        _write_dataset(staging, plans, seed, size, image_size, workers, progress)
    return out


def ensure_synthetic(out: Path, size: str = "default", seed: int = 0, image_size: int = 64, splits=SPLITS,
                     workers: int | None = None, *, progress: bool | None = None, flag: str = "--out") -> Path:
    """Return `out` once it holds `splits` of the dataset with these parameters: nothing is done for splits already
    whole, missing or damaged ones are (re)written in place. A synthetic dataset with other parameters (or a
    foreign folder) is refused, never replaced; `flag` is the option that named `out`, for that message."""
    _check_parameters(size, image_size)
    out, splits = Path(out), _ordered_splits(splits)
    present = complete_splits(out, size, seed, image_size)
    missing = tuple(s for s in splits if s not in present)
    if not missing:
        return out
    if not present:  # nothing of ours with these parameters: write a new folder
        check_can_write(out, size, seed, image_size, flag=flag)
        return generate(out, seed=seed, size=size, image_size=image_size, workers=workers, splits=splits,
                        progress=progress, flag=flag)
    logger.info("adding the synthetic %s split(s) to %s", "/".join(missing), out)
    progress = size != "tiny" if progress is None else progress
    _add_splits(out, _plan(seed, SIZES[size], missing, progress), image_size, workers or os.cpu_count() or 1, progress)
    return out
