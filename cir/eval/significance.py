"""Runs side by side, with a paired two-sided significance test per metric on the per-query values.

As in ranx, every run gets a letter, and a cell carries the letters of the runs it beats significantly (its mean is
higher and the test's p-value is below alpha). No correction for multiple comparisons is applied.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import permutations
from typing import Any, Mapping

import numpy as np
from rich.table import Table
from scipy import stats

from ..data.benchmark import Benchmark
from ..errors import CirError
from ..types import Run
from .metrics import per_query_scores
from .report import build_table

TESTS = ("t-test", "randomization")
SUPERSCRIPTS = str.maketrans(string.ascii_lowercase[:16], "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖ")
RANDOMIZATION_CHUNK = 1_000


def paired_p_value(
    a: np.ndarray, b: np.ndarray, test: str = "t-test", trials: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of a paired test that `a` and `b` (per-query values) have the same mean."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not differences.any():
        return 1.0
    if test == "t-test":
        if np.all(differences == differences[0]):  # every query moves the same way by the same amount
            return 0.0
        return float(stats.ttest_rel(a, b).pvalue)
    if test == "randomization":
        return _randomization_p_value(differences, trials, seed)
    raise CirError(f"unknown significance test {test!r} (known: {', '.join(TESTS)})")


def _randomization_p_value(differences: np.ndarray, trials: int, seed: int) -> float:
    """Fisher's randomization test: flip the sign of each query's difference at random, count means as extreme."""
    rng = np.random.default_rng(seed)
    observed = abs(differences.mean())
    extreme = 0
    for start in range(0, trials, RANDOMIZATION_CHUNK):
        signs = rng.choice((-1.0, 1.0), size=(min(RANDOMIZATION_CHUNK, trials - start), differences.size))
        extreme += int(np.count_nonzero(np.abs(signs @ differences) / differences.size >= observed - 1e-12))
    return (extreme + 1) / (trials + 1)


@dataclass
class Comparison:
    """Mean metrics per run and the pairwise p-values behind the superscripts."""

    title: str
    caption: str
    test: str
    alpha: float
    metric_names: list[str]
    means: dict[str, dict[str, float]]
    p_values: dict[tuple[str, str], dict[str, float]]

    @property
    def letters(self) -> dict[str, str]:
        return {run: string.ascii_lowercase[i % 26] for i, run in enumerate(self.means)}

    def beats(self, run: str, metric: str) -> list[str]:
        """The runs that `run` beats significantly on `metric`."""
        return [
            other
            for other in self.means
            if other != run
            and self.means[run][metric] > self.means[other][metric]
            and self.p_values[(run, other)][metric] < self.alpha
        ]

    def table(self) -> Table:
        letters = self.letters
        body = {}
        for run, values in self.means.items():
            cells = []
            for metric in self.metric_names:
                marks = "".join(letters[o] for o in self.beats(run, metric)).translate(SUPERSCRIPTS)
                cells.append(f"{values[metric]:.2f}{marks}")
            body[f"{run} ({letters[run]})"] = cells
        return build_table(self.title, self.legend(), self.metric_names, body)

    def legend(self) -> str:
        return (
            f"{self.caption}\nPaired two-sided {self.test}, alpha = {self.alpha}: the superscripts name the runs "
            "that a value beats significantly."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "caption": self.caption,
            "test": self.test,
            "alpha": self.alpha,
            "rows": self.means,
            "beats": {run: {m: self.beats(run, m) for m in self.metric_names} for run in self.means},
            "p_values": {f"{a} vs {b}": p for (a, b), p in self.p_values.items() if a < b},
        }


def compare_runs(
    benchmark: Benchmark,
    runs: Mapping[str, Run],
    alpha: float = 0.05,
    test: str = "t-test",
    caption: str | None = None,
) -> Comparison:
    """Score every run on `benchmark` and test every pair of runs on every metric."""
    if test not in TESTS:
        raise CirError(f"unknown significance test {test!r} (known: {', '.join(TESTS)})")
    per_query = {name: per_query_scores(benchmark, run) for name, run in runs.items()}
    metric_names = list(benchmark.metric_names)
    p_values: dict[tuple[str, str], dict[str, float]] = {}
    for a, b in permutations(per_query, 2):
        if (b, a) in p_values:
            p_values[(a, b)] = p_values[(b, a)]
            continue
        p_values[(a, b)] = {m: paired_p_value(per_query[a][m], per_query[b][m], test) for m in metric_names}
    return Comparison(
        title=f"{benchmark.label}: {len(runs)} runs compared",
        caption=caption or benchmark.protocol,
        test=test,
        alpha=alpha,
        metric_names=metric_names,
        means={name: {m: float(v.mean()) for m, v in values.items()} for name, values in per_query.items()},
        p_values=p_values,
    )
