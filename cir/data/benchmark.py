"""The Benchmark: one split's queries, gallery, ground truth and scoring protocol, and `load_benchmark`.

Scoring lives in `cir.eval` (`validate_run`, `per_query_scores`, `evaluate`): a Benchmark only holds what the
protocol needs, and every system, ours or not, is judged by the same code there (`cir.data` does not depend on it).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Container, Mapping

from ..errors import CirError, DatasetNotFoundError, FormatError
from ..io import read_json
from ..types import Gallery, Query

log = logging.getLogger(__name__)

BENCHMARK_NAMES = ("cirr", "fashioniq", "circo")
DISPLAY_NAMES = {"cirr": "CIRR", "fashioniq": "FashionIQ", "circo": "CIRCO"}


@dataclass
class Benchmark:
    """A split of a benchmark with its protocol: who is ranked against whom, and which metrics count."""

    name: str
    split: str
    release: str | None
    category: str | None
    protocol: str
    queries: list[Query]
    gallery: Gallery
    targets: dict[str, list[str]] | None
    subsets: dict[str, list[str]] | None
    exclude_reference: bool
    top_k: int
    metric_names: list[str]
    # The metrics whose mean is the headline "avg" (CIRR: recall@5 and recall_subset@1); empty: no headline.
    headline_of: tuple[str, ...] = ()
    # When the gallery is not loaded (CIRCO without its COCO images), the form every image id must take.
    id_pattern: str | None = None
    # Training texts a query may be given instead of its evaluation text (FashionIQ: its captions in either order,
    # or one alone, as the reference work trains); None: the evaluation text only.
    text_variants: dict[str, list[str]] | None = None

    @property
    def label(self) -> str:
        """Short name for titles and messages, e.g. "CIRR rc2 val" or "FashionIQ dress val"."""
        parts = [DISPLAY_NAMES.get(self.name, self.name), self.release, self.category, self.split]
        return " ".join(p for p in parts if p)

    @cached_property
    def query_by_id(self) -> dict[str, Query]:
        return {q.id: q for q in self.queries}

    def is_image_id(self, image_id: str) -> bool:
        """Whether `image_id` can be ranked: a gallery member, or (gallery not loaded) of the benchmark's id form."""
        if len(self.gallery):
            return image_id in self.gallery
        return self.id_pattern is not None and re.fullmatch(self.id_pattern, image_id) is not None


def reference_rule(exclude_reference: bool | None, official: bool, source: str) -> tuple[bool, str]:
    """The reference rule a split is scored under, and its words for the protocol caption.

    `exclude_reference` None follows the benchmark's own rule `official` (which `source` names, e.g. "the official
    evaluation code"); a departure from it is captioned as not the official protocol, whose figures are not comparable.
    """
    exclude = official if exclude_reference is None else bool(exclude_reference)
    rule = "reference excluded" if exclude else "reference kept"
    if exclude == official:
        return exclude, f"{rule}, as {source}"
    return exclude, f"{rule} (not the official protocol: figures not comparable)"


def load_benchmark(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    category: str | None = None,
    release: str | None = None,
    image_root: str | os.PathLike | None = None,
    exclude_reference: bool | None = None,
) -> Benchmark:
    """Read one split of `name` ("cirr", "fashioniq" with a category, "circo") from its annotation folder `root`.

    `exclude_reference`: whether a query's own reference image is dropped from its ranking before scoring. None (the
    default) is the benchmark's official rule: excluded on CIRR (its test server refuses it), kept on FashionIQ and
    CIRCO (CIRCO's official evaluation code scores the ranking as submitted). True or False overrides it on any
    benchmark, and the protocol caption then says that the figures are not comparable with the literature's.
    """
    if name == "cirr":
        from .cirr import load_cirr

        benchmark = load_cirr(root, split, release=release, image_root=image_root, exclude_reference=exclude_reference)
    elif name == "fashioniq":
        from .fashioniq import load_fashioniq

        if category is None:
            raise CirError(
                "FashionIQ is scored per category: give a category (dress, shirt, toptee; or all, to train on the "
                "three together), or use cir.data.load_fashioniq_categories for all three"
            )
        if category == "all":
            from .fashioniq import load_fashioniq_all

            benchmark = load_fashioniq_all(root, split, image_root=image_root, exclude_reference=exclude_reference)
        else:
            benchmark = load_fashioniq(root, split, category, image_root=image_root, exclude_reference=exclude_reference)
    elif name == "circo":
        from .circo import load_circo

        benchmark = load_circo(root, split, image_root=image_root, exclude_reference=exclude_reference)
    else:
        raise CirError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARK_NAMES)})")
    log.info("%s: %d queries, %d gallery images", benchmark.label, len(benchmark.queries), len(benchmark.gallery))
    return benchmark


def dataset_root(root: str | os.PathLike | None, what: str, hint: str) -> Path:
    """The annotation folder, or a DatasetNotFoundError saying what belongs there."""
    if root is None:
        raise DatasetNotFoundError(f"no {what} folder given (--root DIR): {hint}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetNotFoundError(f"{what} folder not found: {path}. {hint}")
    return path


def read_annotation(path: Path, hint: str) -> Any:
    """Read an annotation JSON file; a missing one names the file and where to get it."""
    if not path.is_file():
        raise DatasetNotFoundError(f"annotation file not found: {path}. {hint}")
    return read_json(path, "annotation file")


def read_entry_list(path: Path, hint: str) -> list[Any]:
    entries = read_annotation(path, hint)
    if not isinstance(entries, list):
        raise FormatError(f"{path}: expected a JSON list of annotation entries, got {type(entries).__name__}")
    return entries


def entry_field(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`entry[key]`, checked to be of `kind`; otherwise a FormatError naming `where` (file and entry)."""
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise FormatError(f"{where}: missing field {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FormatError(f"{where}: field {key!r} has an unexpected value {value!r:.80}")
    return value


def string_list(entry: Any, key: str, where: str) -> list[str]:
    values = entry_field(entry, key, list, where)
    if not all(isinstance(v, str) for v in values):
        raise FormatError(f"{where}: field {key!r} should be a list of strings")
    return values


def require_known(image: str, field: str, known: Container[str], where: str, listing: str) -> None:
    """An annotation that names an image its split does not list is a broken file."""
    if image not in known:
        raise FormatError(f"{where}: {field} {image!r} is not in {listing}")


def require_all_or_none(found: Mapping[str, object], queries: list[Query], field: str, path: Path) -> None:
    """Ground truth on some entries only is a broken file, not a split without ground truth."""
    if found and len(found) != len(queries):
        lacking = next(q.id for q in queries if q.id not in found)
        raise FormatError(f"{path}: query {lacking} has no {field!r}, unlike the others")


def scan_images(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Image stem -> path for the files directly inside `folder` (one listing, no per-image stat calls)."""
    with os.scandir(folder) as entries:
        return {
            Path(e.name).stem: Path(e.path)
            for e in entries
            if e.is_file() and Path(e.name).suffix.lower() in suffixes
        }
