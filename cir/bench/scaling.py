"""How a cost grows with gallery size: the exponent b of cost ~ a * n**b, fitted by least squares on log-log axes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

# The stage-one costs whose growth `cir bench` reports, with the words its tables use.
SCALED_COSTS = {
    "build_s": "build time",
    "index_bytes": "index size",
    "single_p50_ms": "latency p50 (1 query, 1 thread)",
    "batch_ms_per_query": "batched ms per query",
}


@dataclass
class PowerLaw:
    """cost = coefficient * n ** exponent through the measured points (n, cost)."""

    exponent: float
    coefficient: float
    points: list[tuple[int, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"exponent": self.exponent, "coefficient": self.coefficient, "points": [list(p) for p in self.points]}


def fit_power_law(sizes: Sequence[float], costs: Sequence[float]) -> PowerLaw | None:
    """The least-squares line through (log n, log cost); None when fewer than two distinct sizes have a positive cost."""
    points = sorted((int(n), float(c)) for n, c in zip(sizes, costs) if n > 0 and c is not None and c > 0)
    if len({n for n, _ in points}) < 2:
        return None
    log_n = np.log([n for n, _ in points])
    log_cost = np.log([c for _, c in points])
    exponent, intercept = np.polyfit(log_n, log_cost, 1)
    return PowerLaw(float(exponent), float(np.exp(intercept)), points)


def scaling_fits(rows: Iterable[dict[str, Any]], costs: Sequence[str] = tuple(SCALED_COSTS)) -> list[dict[str, Any]]:
    """One entry per (method, cost) measured at two or more scales: the fitted exponent and its points."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            by_method.setdefault(row["method"], []).append(row)
    fits = []
    for method, measured in by_method.items():
        for cost in costs:
            law = fit_power_law([r["images"] for r in measured], [r.get(cost) for r in measured])
            if law is not None:
                fits.append({"method": method, "cost": cost, **law.to_dict()})
    return fits
