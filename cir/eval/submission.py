"""Test-server files: built from a run, checked against the server's rules before writing, and checkable on their own.

CIRR (docs/Test-split_server.md of Cuberick-Orion/CIRR): two JSON files, `{"version": "rc2", "metric": "recall",
"<pairid>": [50 ids]}` and the same with `"recall_subset"` and 3 ids, every pairid of the split, 5 MB at most each.
The recall list leaves out the reference; the subset list ranks only the query's other img_set members.
CIRCO (README of miccunifi/CIRCO): one JSON file `{"<query id>": [50 integer COCO ids]}` for every query. The file
holds the first 50 ids of the run as ranked, the reference included wherever the run ranks it: the server runs the
official `src/evaluation.py`, which scores the submitted ids exactly as they are (a reference among them is a miss,
never removed), and SEARLE's `generate_test_submission.py` writes the plain top 50. That is the ranking `cir score`
scores under the official protocol, so a val file read back by `cir score circo` gives the run's own figures. Only a
benchmark loaded with the non-official `exclude_reference=True` drops the reference first, so that the file again
matches what cir scored. The official examples list a query's own reference in a few rankings, so a reference in a
file is only noted in the log (it is never a ground truth: it wastes a slot).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..data.benchmark import Benchmark
from ..errors import CirError, FormatError
from ..io import read_json, write_text
from ..types import Run
from .metrics import restrict_to, without_reference
from .validate import validate_run

log = logging.getLogger(__name__)

MAX_BYTES = 5_000_000
CIRR_LENGTHS = {"recall": 50, "recall_subset": 3}
CIRR_HEADER = ("version", "metric")
CIRCO_LENGTH = 50


def build_submission(benchmark: Benchmark, run: Run) -> dict[str, dict[str, Any]]:
    """File name -> content of the server files for `run` (CIRR: two files, CIRCO: one), checked."""
    validate_run(benchmark, run)
    if benchmark.name == "cirr":
        files = {
            f"cirr_{benchmark.split}_pred_ranks_{metric}.json": _cirr_file(benchmark, run, metric)
            for metric in CIRR_LENGTHS
        }
    elif benchmark.name == "circo":
        files = {f"circo_{benchmark.split}_submission.json": _circo_file(benchmark, run)}
    else:
        raise CirError(f"{benchmark.label} has no evaluation server (test-server files exist for CIRR and CIRCO)")
    for name, content in files.items():
        check_submission(benchmark, content, source=name)
        _check_size(len(_serialize(content)), name)
    return files


def write_submission(benchmark: Benchmark, run: Run, out_dir: str | os.PathLike) -> list[Path]:
    """Build, check and atomically write the server files for `run` into `out_dir`; return their paths."""
    files = build_submission(benchmark, run)
    return [write_text(Path(out_dir) / name, _serialize(content)) for name, content in files.items()]


def check_submission_file(benchmark: Benchmark, path: str | os.PathLike) -> str:
    """Check an existing server file against the split's queries; return what it holds (e.g. "recall")."""
    path = Path(path)
    content = read_json(path, "submission file")
    _check_size(path.stat().st_size, str(path))
    return check_submission(benchmark, content, source=str(path))


def check_submission(benchmark: Benchmark, content: Any, source: str) -> str:
    """Raise FormatError naming `source` and the query if `content` breaks the server's rules."""
    if not isinstance(content, dict):
        raise FormatError(f"{source}: a submission file holds one JSON object")
    if benchmark.name == "cirr":
        return _check_cirr(benchmark, content, source)
    if benchmark.name == "circo":
        return _check_circo(benchmark, content, source)
    raise CirError(f"{benchmark.label} has no evaluation server (test-server files exist for CIRR and CIRCO)")


def _cirr_file(benchmark: Benchmark, run: Run, metric: str) -> dict[str, Any]:
    length = CIRR_LENGTHS[metric]
    content: dict[str, Any] = {"version": benchmark.release, "metric": metric}
    for query in benchmark.queries:
        ids = run[query.id].ids
        if metric == "recall":
            ranked = without_reference(ids, query.reference, length)
            pool = "images besides the reference"
        else:
            ranked = restrict_to(ids, _members(benchmark, query.id))[:length]
            pool = "of its img_set members (rank the whole gallery, or at least the members)"
        if len(ranked) < length:
            raise FormatError(
                f"run {run.name!r}: query {query.id!r} ranks only {len(ranked)} {pool}; the {metric} file needs {length}"
            )
        content[query.id] = ranked
    return content


def _circo_file(benchmark: Benchmark, run: Run) -> dict[str, list[int]]:
    """The first 50 ids of each ranking as the benchmark scores it (reference kept unless it excludes the reference)."""
    content = {}
    for query in benchmark.queries:
        reference = query.reference if benchmark.exclude_reference else None
        ranked = without_reference(run[query.id].ids, reference, CIRCO_LENGTH)
        if len(ranked) < CIRCO_LENGTH:
            pool = "images besides the reference" if reference is not None else "images"
            raise FormatError(
                f"run {run.name!r}: query {query.id!r} ranks only {len(ranked)} {pool}; the server needs {CIRCO_LENGTH}"
            )
        content[query.id] = [int(i) for i in ranked]
    return content


def _check_cirr(benchmark: Benchmark, content: dict[str, Any], source: str) -> str:
    if content.get("version") != benchmark.release:
        raise FormatError(f"{source}: \"version\" should be {benchmark.release!r}, got {content.get('version')!r}")
    metric = content.get("metric")
    if metric not in CIRR_LENGTHS:
        raise FormatError(f"{source}: \"metric\" should be one of {', '.join(CIRR_LENGTHS)}, got {metric!r}")
    length = CIRR_LENGTHS[metric]
    rankings = {k: v for k, v in content.items() if k not in CIRR_HEADER}
    _check_query_ids(benchmark, rankings, source, "pairid")
    gallery = set(benchmark.gallery.ids)
    for query in benchmark.queries:
        where = f"{source}: pairid {query.id}"
        ids = _check_list(rankings[query.id], length, str, where)
        if query.reference in ids:
            raise FormatError(f"{where}: lists the reference image {query.reference!r}, which the protocol excludes")
        allowed = set(_members(benchmark, query.id)) if metric == "recall_subset" else gallery
        stranger = next((i for i in ids if i not in allowed), None)
        if stranger is not None:
            scope = "the query's other img_set members" if metric == "recall_subset" else "the split's images"
            raise FormatError(f"{where}: image {stranger!r} is not among {scope}")
    return metric


def _check_circo(benchmark: Benchmark, content: dict[str, Any], source: str) -> str:
    _check_query_ids(benchmark, content, source, "query")
    listing_reference = []
    for query in benchmark.queries:
        where = f"{source}: query {query.id}"
        ids = [str(i) for i in _check_list(content[query.id], CIRCO_LENGTH, int, where)]
        stranger = next((i for i in ids if not benchmark.is_image_id(i)), None)
        if stranger is not None:
            raise FormatError(f"{where}: image {stranger} is not in the {benchmark.label} gallery")
        if query.reference in ids:
            listing_reference.append(query.id)
    if listing_reference:
        log.info(
            "%s: %d queries list their own reference image, which the official evaluation counts as a miss "
            "(it is never a ground truth; first: query %s)",
            source, len(listing_reference), listing_reference[0],
        )
    return "rankings"


def _check_query_ids(benchmark: Benchmark, rankings: dict[str, Any], source: str, word: str) -> None:
    missing = [q.id for q in benchmark.queries if q.id not in rankings]
    if missing:
        raise FormatError(f"{source}: {word} {missing[0]} of {benchmark.label} is missing ({len(missing):,} missing)")
    known = benchmark.query_by_id
    unknown = next((k for k in rankings if k not in known), None)
    if unknown is not None:
        raise FormatError(f"{source}: {word} {unknown} is not a query of {benchmark.label}")


def _check_list(value: Any, length: int, kind: type, where: str) -> list:
    """A list of exactly `length` distinct values of `kind`."""
    if not isinstance(value, list):
        raise FormatError(f"{where}: expected a list of {length} image ids, got {type(value).__name__}")
    if len(value) != length:
        raise FormatError(f"{where}: expected exactly {length} image ids, got {len(value)}")
    odd = next((v for v in value if isinstance(v, bool) or not isinstance(v, kind)), None)
    if odd is not None:
        raise FormatError(f"{where}: image ids should be {kind.__name__}s, got {odd!r}")
    if len(set(value)) != length:
        duplicate = next(v for v, n in Counter(value).items() if n > 1)
        raise FormatError(f"{where}: image {duplicate!r} is listed more than once")
    return value


def _members(benchmark: Benchmark, query_id: str) -> list[str]:
    if benchmark.subsets is None:
        raise CirError(f"{benchmark.label} has no img_set members: a recall_subset file cannot be built or checked")
    return benchmark.subsets[query_id]


def _check_size(size: int, name: str) -> None:
    if size > MAX_BYTES:
        raise FormatError(f"{name}: {size:,} bytes, over the server's limit of {MAX_BYTES:,}")


def _serialize(content: dict[str, Any]) -> str:
    """Compact JSON: the server limits file size, not layout."""
    return json.dumps(content, separators=(",", ":")) + "\n"
