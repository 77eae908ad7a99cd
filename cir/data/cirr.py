"""CIRR reader: `captions/cap.<release>.<split>.json` + `image_splits/split.<release>.<split>.json`.

Protocol (CIRR paper, official evaluation code): the gallery is every image of the split, the reference is removed
from its own ranking, Recall@{1,5,10,50} on `target_hard`, Recall_subset@{1,2,3} within the 5 other
`img_set.members`, headline = (Recall@5 + Recall_subset@1) / 2. Any CIRR-layout folder works (e.g. a synthetic
release): targets are read from `target_hard` wherever every entry has one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CirError, DatasetNotFoundError, FormatError
from ..types import Gallery, Query
from .benchmark import (
    Benchmark,
    dataset_root,
    entry_field,
    read_annotation,
    read_entry_list,
    require_all_or_none,
    reference_rule,
    require_known,
    string_list,
)

HINT = (
    "Put the CIRR annotations there: captions/cap.rc2.<split>.json and image_splits/split.rc2.<split>.json "
    "from https://github.com/Cuberick-Orion/CIRR (branch cirr_dataset); images (NLVR2) under img_raw/ or the folder itself"
)
RECALL_AT = (1, 5, 10, 50)
RECALL_SUBSET_AT = (1, 2, 3)
TOP_K = 50
SPLIT_LISTING = "the split's image_splits file"


def cirr_hint(root: str | os.PathLike | None, release: str | None, split: str | None = None) -> str:
    """Where a missing CIRR-layout folder or file comes from. cir's synthetic benchmark (release "synth", or a folder
    whose metadata.json says so) is written by `cir data synth`, never downloaded; a missing folder of unknown
    release may be either, so both are named."""
    from .synth import synthetic_hint, write_command

    if root is None:
        return HINT
    if hint := synthetic_hint(Path(root), release, split):
        return hint
    if release is None and not Path(root).is_dir():
        return f"For cir's synthetic benchmark run `{write_command(Path(root))}`. For CIRR itself: {HINT}"
    return HINT


def detect_release(root: Path, split: str) -> str:
    """The release of the only `captions/cap.<release>.<split>.json` in `root`."""
    suffix = f".{split}.json"
    releases = sorted(p.name[len("cap.") : -len(suffix)] for p in (root / "captions").glob(f"cap.*{suffix}"))
    if not releases:
        from .synth import missing_split_hint

        raise DatasetNotFoundError(missing_split_hint(root, split) or f"no captions/cap.<release>{suffix} in {root}. {HINT}")
    if len(releases) > 1:
        raise CirError(f"{root}: several CIRR releases for split {split!r} ({', '.join(releases)}): pick one with --release")
    return releases[0]


def read_image_split(path: Path, hint: str = HINT) -> dict[str, str]:
    """Image name -> path relative to the image root, e.g. "./dev/dev-0-0-img0.png"."""
    mapping = read_annotation(path, hint)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise FormatError(f"{path}: expected a JSON object of image name -> relative image path")
    return mapping


def default_image_root(root: Path) -> Path:
    """The official layout keeps images under `img_raw/`; other copies put the split folders in the root itself."""
    return root / "img_raw" if (root / "img_raw").is_dir() else root


def load_cirr(
    root: str | os.PathLike | None,
    split: str,
    release: str | None = None,
    image_root: str | os.PathLike | None = None,
    exclude_reference: bool | None = None,
) -> Benchmark:
    """Read a CIRR-layout split; `release` is detected from the caption file names when not given.

    `exclude_reference` None is CIRR's rule (the reference is dropped from its own ranking); see `load_benchmark`.
    """
    root = dataset_root(root, "CIRR", cirr_hint(root, release, split))
    release = release or detect_release(root, split)
    hint = cirr_hint(root, release, split)
    captions_path = root / "captions" / f"cap.{release}.{split}.json"
    entries = read_entry_list(captions_path, hint)
    image_split = read_image_split(root / "image_splits" / f"split.{release}.{split}.json", hint)
    images = Path(image_root) if image_root is not None else default_image_root(root)
    gallery = Gallery(list(image_split), {n: images / rel for n, rel in image_split.items()}, name=f"cirr-{release}-{split}")

    queries: list[Query] = []
    targets: dict[str, list[str]] = {}
    subsets: dict[str, list[str]] = {}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{captions_path}: entry {index}"
        pairid = str(entry_field(entry, "pairid", int, where))
        where = f"{where} (pairid {pairid})"
        if pairid in seen:
            raise FormatError(f"{where}: pairid {pairid} appears twice")
        seen.add(pairid)
        reference = entry_field(entry, "reference", str, where)
        require_known(reference, "reference", image_split, where, SPLIT_LISTING)
        queries.append(Query(pairid, reference, entry_field(entry, "caption", str, where)))
        if "target_hard" in entry:
            target = entry_field(entry, "target_hard", str, where)
            require_known(target, "target_hard", image_split, where, SPLIT_LISTING)
            targets[pairid] = [target]
        if "img_set" in entry:
            members = string_list(entry_field(entry, "img_set", dict, where), "members", f"{where}: img_set")
            subsets[pairid] = [m for m in members if m != reference]
    require_all_or_none(targets, queries, "target_hard", captions_path)
    require_all_or_none(subsets, queries, "img_set", captions_path)

    has_subsets = bool(subsets)
    metric_names = [f"recall@{k}" for k in RECALL_AT]
    if has_subsets:
        metric_names += [f"recall_subset@{k}" for k in RECALL_SUBSET_AT] + ["avg"]
    exclude, rule = reference_rule(exclude_reference, official=True, source="the official test server")
    protocol = f"CIRR {release} {split}: gallery = all {len(gallery):,} split images, {rule}; Recall@K on target_hard"
    if has_subsets:
        protocol += ", Recall_subset@K within the other img_set members; avg = (Recall@5 + Recall_subset@1) / 2"
    return Benchmark(
        name="cirr",
        split=split,
        release=release,
        category=None,
        protocol=protocol,
        queries=queries,
        gallery=gallery,
        targets=targets or None,
        subsets=subsets or None,
        exclude_reference=exclude,
        top_k=TOP_K,
        metric_names=metric_names,
        headline_of=("recall@5", "recall_subset@1") if has_subsets else (),
    )
