"""FashionIQ reader: `captions/cap.<category>.<split>.json` + `image_splits/split.<category>.<split>.json`.

Protocol (the one of CLIP4Cir and the reference work): scored per category; the gallery is the category's split
file; the reference (the entry's `candidate`) stays in the gallery; the two captions become one text,
"<first, stripped and capitalised> and <second, stripped>"; Recall@10 and Recall@50 are the reported numbers.
A query's id is the entry's position in its category's caption file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CirError, FormatError
from ..types import IMAGE_SUFFIXES, Gallery, Query
from .benchmark import (
    Benchmark,
    dataset_root,
    entry_field,
    read_annotation,
    read_entry_list,
    reference_rule,
    require_all_or_none,
    require_known,
    scan_images,
    string_list,
)

CATEGORIES = ("dress", "shirt", "toptee")
HINT = (
    "Put the FashionIQ annotations there: captions/cap.<category>.<split>.json and "
    "image_splits/split.<category>.<split>.json from https://github.com/XiaoxiaoGuo/fashion-iq; "
    "images as images/<asin>.png (https://github.com/hongwang600/fashion-iq-metadata)"
)
RECALL_AT = (1, 5, 10, 50)
REPORTED = ("recall@10", "recall@50")
TOP_K = 100
DEFAULT_SUFFIX = ".png"
SPLIT_LISTING = "the category's image_splits file"


def join_captions(first: str, second: str) -> str:
    """The two relative captions as one text, exactly as the reference work joins them."""
    return f"{first.strip('.?, ').capitalize()} and {second.strip('.?, ')}"


def caption_variants(first: str, second: str) -> list[str]:
    """The training texts of the reference work: both captions in either order, or one alone."""
    one, two = first.strip(".?, "), second.strip(".?, ")
    return [join_captions(first, second), join_captions(second, first), one.capitalize(), two.capitalize()]


def image_paths(names: list[str], folder: Path) -> dict[str, Path]:
    """Where each product image lives: the file with that stem if the folder has one, else `<asin>.png`."""
    found = scan_images(folder, IMAGE_SUFFIXES) if folder.is_dir() else {}
    return {name: found.get(name, folder / f"{name}{DEFAULT_SUFFIX}") for name in names}


def load_fashioniq(
    root: str | os.PathLike | None,
    split: str,
    category: str,
    image_root: str | os.PathLike | None = None,
    exclude_reference: bool | None = None,
) -> Benchmark:
    """Read one category's split; images default to `<root>/images`.

    `exclude_reference` None is FashionIQ's rule (the reference stays in the ranking); see `load_benchmark`.
    """
    if category not in CATEGORIES:
        raise CirError(f"unknown FashionIQ category {category!r} (known: {', '.join(CATEGORIES)})")
    root = dataset_root(root, "FashionIQ", HINT)
    captions_path = root / "captions" / f"cap.{category}.{split}.json"
    entries = read_entry_list(captions_path, HINT)
    split_path = root / "image_splits" / f"split.{category}.{split}.json"
    names = read_annotation(split_path, HINT)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FormatError(f"{split_path}: expected a JSON list of image names")
    folder = Path(image_root) if image_root is not None else root / "images"
    gallery = Gallery(list(names), image_paths(names, folder), name=f"fashioniq-{category}-{split}")

    queries: list[Query] = []
    targets: dict[str, list[str]] = {}
    variants: dict[str, list[str]] = {}
    for index, entry in enumerate(entries):
        where = f"{captions_path}: entry {index}"
        reference = entry_field(entry, "candidate", str, where)
        captions = string_list(entry, "captions", where)
        if len(captions) != 2:
            raise FormatError(f"{where}: expected 2 captions, got {len(captions)}")
        require_known(reference, "candidate", gallery, where, SPLIT_LISTING)
        queries.append(Query(str(index), reference, join_captions(*captions)))
        variants[str(index)] = caption_variants(*captions)
        if "target" in entry:
            target = entry_field(entry, "target", str, where)
            require_known(target, "target", gallery, where, SPLIT_LISTING)
            targets[str(index)] = [target]
    require_all_or_none(targets, queries, "target", captions_path)

    exclude, rule = reference_rule(exclude_reference, official=False, source="in the literature")
    return Benchmark(
        name="fashioniq",
        split=split,
        release=None,
        category=category,
        protocol=(
            f"FashionIQ {category} {split}: gallery = all {len(gallery):,} images of the category's {split} split, "
            f"{rule}; Recall@K on the target; text = '<caption 1> and <caption 2>'"
        ),
        queries=queries,
        gallery=gallery,
        targets=targets or None,
        subsets=None,
        exclude_reference=exclude,
        top_k=TOP_K,
        metric_names=[f"recall@{k}" for k in RECALL_AT] + ["avg"],
        headline_of=REPORTED,
        text_variants=variants,
    )


def load_fashioniq_categories(
    root: str | os.PathLike | None,
    split: str,
    image_root: str | os.PathLike | None = None,
    exclude_reference: bool | None = None,
) -> dict[str, Benchmark]:
    """The three category benchmarks of a split, by category (images of all three share one folder)."""
    return {
        c: load_fashioniq(root, split, c, image_root=image_root, exclude_reference=exclude_reference)
        for c in CATEGORIES
    }


def load_fashioniq_all(
    root: str | os.PathLike | None,
    split: str,
    image_root: str | os.PathLike | None = None,
    exclude_reference: bool | None = None,
) -> Benchmark:
    """The three categories of a split as one benchmark to train on (query ids "<category>/<index>", one gallery of
    all their images), as the reference work trains FashionIQ. Evaluation stays per category."""
    from dataclasses import replace

    parts = load_fashioniq_categories(root, split, image_root=image_root, exclude_reference=exclude_reference)
    queries, targets, variants, paths = [], {}, {}, {}
    for category, b in parts.items():
        for q in b.queries:
            qid = f"{category}/{q.id}"
            queries.append(replace(q, id=qid))
            variants[qid] = b.text_variants[q.id]
            if b.targets is not None:
                targets[qid] = b.targets[q.id]
        paths.update(b.gallery.paths)
    first = parts[CATEGORIES[0]]
    return replace(
        first,
        category="all",
        protocol=f"FashionIQ {split}: dress, shirt and toptee together (for training; evaluation is per category)",
        queries=queries,
        gallery=Gallery(list(paths), paths, name=f"fashioniq-all-{split}"),
        targets=targets or None,
        text_variants=variants,
    )
