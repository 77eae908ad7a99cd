"""Runs side by side, with a paired two-sided significance test per metric on the per-query values.

As in ranx, every run gets a letter, and a cell carries the letters of the runs it beats significantly (its mean is
higher and the test's p-value is below alpha). By default no correction for multiple comparisons is applied;
`correct(comparisons, "holm")` adjusts the p-values of one metric over every pair of runs in every comparison given
(e.g. every group of a breakdown) with Holm's step-down method, and the marks then follow the adjusted values.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import permutations
from typing import Any, Mapping, Sequence

import numpy as np
from rich.table import Table
from scipy import stats

from ..data.benchmark import Benchmark
from ..errors import CirError
from ..types import Run
from .metrics import per_query_scores
from .report import SUPERSCRIPTS, build_table

TESTS = ("t-test", "randomization")
CORRECTIONS = ("none", "holm")
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
    # Holm-adjusted p-values (same keys as p_values) once `correct` has run; the marks follow them when present.
    adjusted: dict[tuple[str, str], dict[str, float]] | None = None
    correction: str = "none"
    family: str = " per metric over every pair of runs"  # the legend's words for what one correction family holds

    @property
    def letters(self) -> dict[str, str]:
        return {run: string.ascii_lowercase[i % 26] for i, run in enumerate(self.means)}

    def beats(self, run: str, metric: str) -> list[str]:
        """The runs that `run` beats significantly on `metric` (after the correction, if any)."""
        p_values = self.adjusted if self.adjusted is not None else self.p_values
        return [
            other
            for other in self.means
            if other != run
            and self.means[run][metric] > self.means[other][metric]
            and p_values[(run, other)][metric] < self.alpha
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
        return f"{self.caption}\n{self.test_note()}"

    def test_note(self) -> str:
        """One sentence on the test, its level and correction, and what the superscripts mean."""
        corrected = "" if self.correction == "none" else f", {self.correction.capitalize()}-corrected{self.family}"
        return (
            f"Paired two-sided {self.test}, alpha = {self.alpha}{corrected}: the superscripts name the runs "
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
            **({"correction": self.correction,
                "adjusted_p_values": {f"{a} vs {b}": p for (a, b), p in self.adjusted.items() if a < b}}
               if self.adjusted is not None else {}),
        }


def compare_runs(
    benchmark: Benchmark,
    runs: Mapping[str, Run],
    alpha: float = 0.05,
    test: str = "t-test",
    caption: str | None = None,
    correction: str = "none",
) -> Comparison:
    """Score every run on `benchmark` and test every pair of runs on every metric."""
    check_test(test, correction)
    per_query = {name: per_query_scores(benchmark, run) for name, run in runs.items()}
    comparison = compare_scores(
        per_query, f"{benchmark.label}: {len(runs)} runs compared", caption or benchmark.protocol, alpha, test
    )
    return correct([comparison], correction)[0]


def check_test(test: str, correction: str = "none") -> None:
    if test not in TESTS:
        raise CirError(f"unknown significance test {test!r} (known: {', '.join(TESTS)})")
    if correction not in CORRECTIONS:
        raise CirError(f"unknown correction {correction!r} (known: {', '.join(CORRECTIONS)})")


def compare_scores(
    per_query: Mapping[str, Mapping[str, np.ndarray]], title: str, caption: str, alpha: float = 0.05,
    test: str = "t-test",
) -> Comparison:
    """Test every pair of runs on every metric, from their per-query values (run -> metric -> array)."""
    check_test(test)
    metric_names = list(next(iter(per_query.values())))
    p_values: dict[tuple[str, str], dict[str, float]] = {}
    for a, b in permutations(per_query, 2):
        if (b, a) in p_values:
            p_values[(a, b)] = p_values[(b, a)]
            continue
        p_values[(a, b)] = {m: paired_p_value(per_query[a][m], per_query[b][m], test) for m in metric_names}
    return Comparison(
        title=title,
        caption=caption,
        test=test,
        alpha=alpha,
        metric_names=metric_names,
        means={name: {m: float(np.mean(v)) for m, v in values.items()} for name, values in per_query.items()},
        p_values=p_values,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for position, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[i]))
        adjusted[i] = running
    return adjusted


def correct(comparisons: list[Comparison], correction: str, family: str | None = None) -> list[Comparison]:
    """Adjust, per metric, the p-values of every unordered pair of runs in every comparison together (one family);
    "none" leaves them as they are. `family` words the family in the legend."""
    check_test(comparisons[0].test if comparisons else TESTS[0], correction)
    if correction == "none" or not comparisons:
        return comparisons
    for comparison in comparisons:
        comparison.adjusted = {pair: dict(p) for pair, p in comparison.p_values.items()}
        comparison.correction = correction
        if family is not None:
            comparison.family = family
    for metric in comparisons[0].metric_names:
        keys = [(c, pair) for c in comparisons for pair in c.p_values if pair[0] < pair[1]]
        for (c, (a, b)), value in zip(keys, holm([c.p_values[pair][metric] for c, pair in keys])):
            c.adjusted[(a, b)][metric] = c.adjusted[(b, a)][metric] = value
    return comparisons
