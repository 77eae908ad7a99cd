"""CIRCO reader: `annotations/<split>.json`, gallery = COCO 2017 unlabeled.

Protocol (official CIRCO evaluation code, `src/evaluation.py` of miccunifi/CIRCO): mAP@{5,10,25,50} over all ground
truths of a query, where AP@K sums the precision at each relevant hit within the first K and divides by
min(K, number of ground truths). The reference stays in its own ranking: the official code scores the submitted ids
as they are, and SEARLE's validation ranks the whole gallery, reference included. (The reference is never a ground
truth, so dropping it can only raise the figures.) Exclusion is available as an explicit option
(`exclude_reference=True`), captioned as not the official protocol. Image ids are the COCO integer ids written in
decimal ("271520"). Without the COCO folder (or its image-info file) the gallery ids are unknown, and run ids are only
checked for that form.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FormatError
from ..io import read_json
from ..types import Gallery, Query
from .benchmark import (
    Benchmark,
    dataset_root,
    entry_field,
    read_entry_list,
    reference_rule,
    require_all_or_none,
    scan_images,
)

HINT = (
    "Put the CIRCO annotations there: annotations/<split>.json from https://github.com/miccunifi/CIRCO; "
    "images: COCO 2017 unlabeled as COCO2017_unlabeled/unlabeled2017/*.jpg with "
    "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json"
)
MAP_AT = (5, 10, 25, 50)
TOP_K = 50
COCO_ID = r"0|[1-9][0-9]*"
IMAGE_INFO = Path("annotations") / "image_info_unlabeled2017.json"
IMAGE_FOLDER = "unlabeled2017"


def coco_gallery(coco_root: Path) -> Gallery:
    """The COCO 2017 unlabeled images: from the image-info file, else from the image folder, else unknown (empty)."""
    info_path = coco_root / IMAGE_INFO
    folder = coco_root / IMAGE_FOLDER
    if info_path.is_file():
        info = read_json(info_path, "COCO image-info file")
        try:
            paths = {str(int(im["id"])): folder / str(im["file_name"]) for im in info["images"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{info_path}: expected {{'images': [{{'id': int, 'file_name': str}}, ...]}}") from exc
    elif folder.is_dir():
        paths = {str(int(stem)): path for stem, path in scan_images(folder, (".jpg", ".jpeg")).items() if stem.isdigit()}
    else:
        return Gallery([], {}, name="coco2017-unlabeled (not loaded)")
    return Gallery(list(paths), paths, name="coco2017-unlabeled")


def load_circo(
    root: str | os.PathLike | None,
    split: str,
    image_root: str | os.PathLike | None = None,
    exclude_reference: bool | None = None,
) -> Benchmark:
    """Read a CIRCO split; `image_root` is the COCO2017_unlabeled folder (default: inside `root`).

    `exclude_reference` None is the official rule (the reference is kept in its ranking); see `load_benchmark`.
    """
    root = dataset_root(root, "CIRCO", HINT)
    path = root / "annotations" / f"{split}.json"
    entries = read_entry_list(path, HINT)
    gallery = coco_gallery(Path(image_root) if image_root is not None else root / "COCO2017_unlabeled")

    queries: list[Query] = []
    targets: dict[str, list[str]] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: entry {index}"
        query_id = str(entry_field(entry, "id", int, where))
        where = f"{where} (id {query_id})"
        reference = str(entry_field(entry, "reference_img_id", int, where))
        queries.append(Query(query_id, reference, entry_field(entry, "relative_caption", str, where)))
        if "gt_img_ids" in entry:
            ground_truth = entry_field(entry, "gt_img_ids", list, where)
            if not ground_truth or not all(isinstance(i, int) and not isinstance(i, bool) for i in ground_truth):
                raise FormatError(f"{where}: 'gt_img_ids' should be a non-empty list of integer image ids")
            targets[query_id] = [str(i) for i in ground_truth]
    if len({q.id for q in queries}) != len(queries):
        raise FormatError(f"{path}: a query id appears twice")
    require_all_or_none(targets, queries, "gt_img_ids", path)

    if len(gallery):
        scope = f"COCO 2017 unlabeled ({len(gallery):,} images)"
    else:
        scope = "COCO 2017 unlabeled (not loaded: run ids checked as COCO integer ids only)"
    exclude, rule = reference_rule(exclude_reference, official=False, source="the official evaluation code")
    return Benchmark(
        name="circo",
        split=split,
        release=None,
        category=None,
        protocol=(
            f"CIRCO {split}: gallery = {scope}, {rule}; "
            "mAP@K over all ground truths (AP@K divided by min(K, #ground truths))"
        ),
        queries=queries,
        gallery=gallery,
        targets=targets or None,
        subsets=None,
        exclude_reference=exclude,
        top_k=TOP_K,
        metric_names=[f"map@{k}" for k in MAP_AT],
        id_pattern=None if len(gallery) else COCO_ID,
    )
