"""Run validation: a run is scored only if it answers exactly the benchmark's queries with known, distinct images.

A run may be shorter than the gallery; what it leaves out simply never counts as a hit.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FormatError, UnknownIdError
from ..types import Run

if TYPE_CHECKING:
    from ..data.benchmark import Benchmark

log = logging.getLogger(__name__)


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


def misordered_queries(run: Run) -> list[str]:
    """The queries whose scores rise somewhere down their ranking (ties are fine), in the run's order."""
    return [qid for qid, ranking in run.items() if len(ranking) > 1 and bool((np.diff(ranking.scores) > 0).any())]


def warn_if_misordered(run: Run) -> bool:
    """Log one warning for the whole run if its scores contradict its order anywhere; return whether it did.

    Every metric reads the order of the ids, never their scores, so such a run is scored as ordered.
    """
    misordered = misordered_queries(run)
    if not misordered:
        return False
    log.warning(
        "run %r: the scores of query %s%s rise down its ranking; the order of the ids is what gets scored, "
        "not their scores (sort each ranking by score, best first, if the scores are right)",
        run.name, misordered[0], _more(misordered),
    )
    return True


def _more(items: list[str]) -> str:
    return f" (and {len(items) - 1:,} more)" if len(items) > 1 else ""


def _id_form(benchmark: Benchmark) -> str:
    return f" (gallery not loaded: ids must match {benchmark.id_pattern!r})" if benchmark.id_pattern else ""
