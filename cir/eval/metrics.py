"""Retrieval metrics, by name: `recall@K`, `recall_subset@K`, `map@K`, and a benchmark's headline `avg`.

Per-query values are fractions in [0, 1] here and percent once a benchmark scores a run. The reference-exclusion
rule is applied before cutting at K: the reference id is dropped from the ranking, the rest moves up.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import numpy as np

from ..errors import CirError
from ..types import Run
from .validate import validate_run

if TYPE_CHECKING:
    from ..data.benchmark import Benchmark

HEADLINE = "avg"
METRIC_NAME = re.compile(r"(recall|recall_subset|map)@([1-9][0-9]*)")


def parse_metric(name: str) -> tuple[str, int]:
    """"recall_subset@3" -> ("recall_subset", 3)."""
    match = METRIC_NAME.fullmatch(name)
    if match is None:
        raise CirError(f"unknown metric {name!r} (known: recall@K, recall_subset@K, map@K, {HEADLINE})")
    return match.group(1), int(match.group(2))


def without_reference(ids: Sequence[str], reference: str | None, depth: int) -> list[str]:
    """The first `depth` ids once `reference` (if given) is dropped."""
    head = list(ids[: depth + 1])
    if reference is not None and reference in head:
        head.remove(reference)
    return head[:depth]


def restrict_to(ids: Sequence[str], members: Collection[str]) -> list[str]:
    """The ranking restricted to `members`, order kept (members the ranking lacks are left out)."""
    positions = {}
    for member in members:
        try:
            positions[member] = ids.index(member)
        except ValueError:
            continue
    return sorted(positions, key=positions.__getitem__)


def hit_at(ranked: Sequence[str], targets: Collection[str], k: int) -> float:
    """Recall@K of one query: 1 if any target is among the first `k`."""
    return float(any(i in targets for i in ranked[:k]))


def average_precision_at(ranked: Sequence[str], targets: Collection[str], k: int) -> float:
    """CIRCO's AP@K: the precision at each relevant hit within the first `k`, summed, over min(k, #targets)."""
    hits = 0
    total = 0.0
    for rank, image_id in enumerate(ranked[:k], start=1):
        if image_id in targets:
            hits += 1
            total += hits / rank
    return total / min(k, len(targets))


def query_scores(
    ids: Sequence[str],
    targets: Collection[str],
    names: Sequence[str],
    reference: str | None = None,
    members: Collection[str] | None = None,
) -> dict[str, float]:
    """One query's metrics in [0, 1]; `reference` is excluded when given; `members` is the recall_subset set."""
    parsed = {name: parse_metric(name) for name in names}
    depth = max((k for kind, k in parsed.values() if kind != "recall_subset"), default=0)
    ranked = without_reference(ids, reference, depth)
    subset_ranked: list[str] = []
    if any(kind == "recall_subset" for kind, _ in parsed.values()):
        if members is None:
            raise CirError("recall_subset needs the subset members of each query")
        subset_ranked = restrict_to(ids, members)
    scores = {}
    for name, (kind, k) in parsed.items():
        if kind == "recall":
            scores[name] = hit_at(ranked, targets, k)
        elif kind == "recall_subset":
            scores[name] = hit_at(subset_ranked, targets, k)
        else:
            scores[name] = average_precision_at(ranked, targets, k)
    return scores


def per_query_scores(benchmark: Benchmark, run: Run) -> dict[str, np.ndarray]:
    """Validate `run`, then every metric of the benchmark per query, in percent, in the order of its queries."""
    validate_run(benchmark, run)
    if benchmark.targets is None:
        raise CirError(
            f"{benchmark.label} has no ground truth: score it on its evaluation server (see `cir submit`)"
        )
    base = [name for name in benchmark.metric_names if name != HEADLINE]
    values = np.zeros((len(benchmark.queries), len(base)))
    for row, query in enumerate(benchmark.queries):
        scores = query_scores(
            run[query.id].ids,
            set(benchmark.targets[query.id]),
            base,
            reference=query.reference if benchmark.exclude_reference else None,
            members=benchmark.subsets[query.id] if benchmark.subsets else None,
        )
        values[row] = [scores[name] for name in base]
    per_metric = {name: 100.0 * values[:, col] for col, name in enumerate(base)}
    if HEADLINE in benchmark.metric_names:
        per_metric[HEADLINE] = np.mean([per_metric[name] for name in benchmark.headline_of], axis=0)
    return {name: per_metric[name] for name in benchmark.metric_names}


def evaluate(benchmark: Benchmark, run: Run) -> dict[str, float]:
    """Validate `run` and return every metric of the benchmark's `metric_names`, in percent (per-query means)."""
    return {name: float(values.mean()) for name, values in per_query_scores(benchmark, run).items()}


def summarize_categories(per_category: Mapping[str, Mapping[str, float]], reported: Sequence[str]) -> dict[str, float]:
    """FashionIQ-style summary: each category's `reported` metrics, their means over categories, and `avg`
    (the mean of those means, the literature's headline)."""
    summary = {f"{category} {name}": float(scores[name]) for category, scores in per_category.items() for name in reported}
    means = {f"mean {name}": float(np.mean([scores[name] for scores in per_category.values()])) for name in reported}
    return {**summary, **means, HEADLINE: float(np.mean(list(means.values())))}
