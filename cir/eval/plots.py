"""Figures from a report (matplotlib, Agg backend; each written as PNG and SVG): Recall@K against K per run, the
stage one -> stage two move of each query's target, and a metric per group as bars. Every figure carries the
report's title and the machine line of its caption."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import require
from ..io import atomic_path
from .queries import rank_column
from .report import Report, metric_label

if TYPE_CHECKING:
    import pandas as pd

# Rank buckets of the stage-shift matrix: (label, highest rank in it); None: the target is not in the ranking.
BUCKETS = (("1", 1), ("2-5", 5), ("6-10", 10), ("11-50", 50), (">50 or none", None))
FORMATS = (".png", ".svg")


def _pyplot():
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "cir"  # the same figure gives the same SVG
    plt.rcParams["svg.fonttype"] = "none"
    return plt


def _save(figure, stem: Path, report: Report) -> list[Path]:
    """Write `figure` as <stem>.png and <stem>.svg (atomically), footed with the report's machine line."""
    footer = report.caption.splitlines()[-1]
    figure.text(0.01, -0.01, footer, fontsize=6, color="0.4", ha="left", va="top")
    paths = []
    for suffix in FORMATS:
        path = stem.with_name(stem.name + suffix)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight", metadata={"Date": None} if suffix == ".svg" else None)
        paths.append(path)
    _pyplot().close(figure)
    return paths


def recall_curve(report: Report, stem: str | os.PathLike, table: pd.DataFrame | None = None) -> list[Path]:
    """Recall@K (percent of queries whose target is within the first K) against K, one line per run."""
    plt = _pyplot()
    table = report.per_query() if table is None else table
    runs = report.run_names
    deepest = max(int(table[rank_column(r)].max()) if table[rank_column(r)].notna().any() else 1 for r in runs)
    ks = np.arange(1, deepest + 1)
    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        ranks = table[rank_column(run)].to_numpy(dtype=float, na_value=np.inf)
        axes.plot(ks, [100.0 * np.mean(ranks <= k) for k in ks], label=run)
    axes.set(xscale="log", xlabel="K", ylabel="Recall@K (%)", ylim=(0, 100), title=report.title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return _save(figure, Path(stem), report)


def bucket(rank: float) -> int:
    """The index in BUCKETS of a rank (NaN, not in the ranking: the last bucket)."""
    if not np.isnan(rank):
        for i, (_, top) in enumerate(BUCKETS[:-1]):
            if rank <= top:
                return i
    return len(BUCKETS) - 1


def rank_shift(report: Report, before: str, after: str, stem: str | os.PathLike,
               table: pd.DataFrame | None = None) -> tuple[list[Path], dict[str, int]]:
    """The queries counted by the target's rank bucket before (rows) and after (columns) a reranker, with how many
    it lifted, sank and left in place; returns the paths and those counts."""
    plt = _pyplot()
    table = report.per_query() if table is None else table
    first = table[rank_column(before)].to_numpy(dtype=float, na_value=np.nan)
    second = table[rank_column(after)].to_numpy(dtype=float, na_value=np.nan)
    matrix = np.zeros((len(BUCKETS), len(BUCKETS)), dtype=int)
    for a, b in zip(first, second):
        matrix[bucket(a), bucket(b)] += 1
    a, b = np.nan_to_num(first, nan=np.inf), np.nan_to_num(second, nan=np.inf)
    counts = {"lifted": int(np.sum(b < a)), "sank": int(np.sum(b > a)), "unchanged": int(np.sum(a == b))}
    figure, axes = plt.subplots(figsize=(5.5, 4.8))
    axes.imshow(matrix, cmap="Blues")
    labels = [label for label, _ in BUCKETS]
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set(xlabel=f"target rank, {after}", ylabel=f"target rank, {before}")
    for (i, j), n in np.ndenumerate(matrix):
        axes.text(j, i, str(n), ha="center", va="center", color="white" if n > matrix.max() / 2 else "black", fontsize=8)
    axes.set_title(f"{report.title}\n{before} -> {after}: {counts['lifted']} lifted, {counts['sank']} sank, "
                   f"{counts['unchanged']} unchanged", fontsize=9)
    return _save(figure, Path(stem), report), counts


def group_bars(breakdown: Report, metric: str, stem: str | os.PathLike) -> list[Path]:
    """One metric of every run per group of a breakdown, as grouped bars; the group sizes under the names."""
    plt = _pyplot()
    runs = breakdown.run_names
    blocks = breakdown.blocks
    width = 0.8 / len(runs)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(blocks) * max(1, len(runs)) / 2 + 2), 4))
    for i, run in enumerate(runs):
        values = [b.rows[run][metric] for b in blocks]
        axes.bar(np.arange(len(blocks)) + (i - (len(runs) - 1) / 2) * width, values, width, label=run)
    axes.set_xticks(range(len(blocks)), [f"{b.group}\n(n={next(iter(b.rows.values()))['queries']})" for b in blocks])
    axes.set(ylabel=f"{metric_label(metric)} (%)", ylim=(0, 100), title=f"{breakdown.title}: {metric_label(metric)}")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend()
    return _save(figure, Path(stem), breakdown)


def plot_all(report: Report, breakdowns: Sequence[Report], metric: str, out: Path,
             table: pd.DataFrame | None = None) -> dict[str, list[Path]]:
    """Every figure of `cir report`: the recall curve, the rank shift of each run to the next, one bar chart per
    breakdown; name -> paths."""
    table = report.per_query() if table is None else table
    figures = {"recall_at_k": recall_curve(report, out / "recall_at_k", table)}
    runs = report.run_names
    for before, after in zip(runs, runs[1:]):
        figures[f"rank_shift {before} -> {after}"] = rank_shift(report, before, after,
                                                               out / f"rank_shift.{before}.{after}", table)[0]
    for breakdown in breakdowns:
        figures[f"by {breakdown.by}"] = group_bars(breakdown, metric, out / f"by_{breakdown.by}.{metric.replace('@', '')}")
    return figures
