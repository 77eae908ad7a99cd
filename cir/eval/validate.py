"""Run validation: a run is scored only if it answers exactly the benchmark's queries with known, distinct images.

A run may be shorter than the gallery; what it leaves out simply never counts as a hit.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ..errors import FormatError, UnknownIdError
from ..types import Run

if TYPE_CHECKING:
    from ..data.benchmark import Benchmark


def validate_run(benchmark: Benchmark, run: Run) -> None:
    """Raise FormatError / UnknownIdError naming the query and image id of the first problem in `run`."""
    known = benchmark.query_by_id
    unknown = [qid for qid in run if qid not in known]
    if unknown:
        raise UnknownIdError(
            f"run {run.name!r}: query {unknown[0]!r} is not a query of {benchmark.label}{_more(unknown)}"
        )
    missing = [q.id for q in benchmark.queries if q.id not in run]
    if missing:
        raise FormatError(
            f"run {run.name!r}: no ranking for query {missing[0]!r} of {benchmark.label} "
            f"({len(missing):,} of {len(known):,} queries missing)"
        )
    gallery_ids = set(benchmark.gallery.ids)
    for qid, ranking in run.items():
        ids = ranking.ids
        distinct = set(ids)
        if len(distinct) != len(ids):
            duplicate = next(i for i, n in Counter(ids).items() if n > 1)
            raise FormatError(f"run {run.name!r}: query {qid!r} ranks image {duplicate!r} more than once")
        strangers = distinct - gallery_ids if gallery_ids else {i for i in ids if not benchmark.is_image_id(i)}
        if strangers:
            stranger = next(i for i in ids if i in strangers)
            raise UnknownIdError(
                f"run {run.name!r}: query {qid!r} ranks image {stranger!r}, which is not in the "
                f"{benchmark.label} gallery{_id_form(benchmark)}"
            )


def _more(items: list[str]) -> str:
    return f" (and {len(items) - 1:,} more)" if len(items) > 1 else ""


def _id_form(benchmark: Benchmark) -> str:
    return f" (gallery not loaded: ids must match {benchmark.id_pattern!r})" if benchmark.id_pattern else ""
