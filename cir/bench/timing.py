"""Measuring helpers shared by the benchmark sections: per-call latencies, thread limits, peak memory."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import numpy as np


def seconds_per_call(call: Callable[[Any], object], items: Iterable[Any], warmup: bool = True,
                     budget_s: float | None = None, min_calls: int = 10) -> np.ndarray:
    """Wall-clock seconds of `call(item)` for each item, after one untimed call on the first item (warm caches).

    With `budget_s`, timing stops once that many seconds are spent and at least `min_calls` items are timed, so a
    very slow index is sampled rather than measured for an hour: the result is as long as the items timed."""
    items = list(items)
    if warmup and items:
        call(items[0])
    seconds: list[float] = []
    spent = 0.0
    for item in items:
        if budget_s is not None and spent >= budget_s and len(seconds) >= min_calls:
            break
        start = time.perf_counter()
        call(item)
        seconds.append(time.perf_counter() - start)
        spent += seconds[-1]
    return np.asarray(seconds, dtype=np.float64)


def latency_summary(seconds: np.ndarray, prefix: str = "") -> dict[str, float]:
    """p50 / p95 / mean milliseconds and calls per second of per-call timings, keys prefixed with `prefix`."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return {f"{prefix}p50_ms": float(np.percentile(ms, 50)), f"{prefix}p95_ms": float(np.percentile(ms, 95)),
            f"{prefix}mean_ms": float(ms.mean()), f"{prefix}qps": float(1000 / ms.mean())}


def timed(call: Callable[[], object]) -> tuple[float, object]:
    """Seconds one call takes, and what it returned."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def best_of(call: Callable[[], object], repeats: int = 3, budget_s: float | None = None) -> tuple[float, object]:
    """The fewest seconds of `repeats` calls (the least disturbed by other work on the machine), and a result.
    With `budget_s`, no call is started once that many seconds are spent (the first call always runs)."""
    timings = [timed(call)]
    while len(timings) < repeats and (budget_s is None or sum(t for t, _ in timings) < budget_s):
        timings.append(timed(call))
    return min(seconds for seconds, _ in timings), timings[-1][1]


@contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Run torch and faiss on `threads` threads inside the block, restoring the previous settings after."""
    import faiss
    import torch

    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        faiss.omp_set_num_threads(faiss_before)
