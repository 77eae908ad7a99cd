"""What every benchmark section works on: the model (shipped weights, or random ones said so), its sparse heads,
and a benchmark split whose images and queries supply the real vectors.

The data is the synthetic benchmark's val split at `--data` (default data/synth). Without it, a tiny synthetic
benchmark is generated into a temporary folder for the real vectors, and the end-to-end section is skipped.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..cache import FeatureCache
from ..errors import CirError, DatasetNotFoundError

log = logging.getLogger(__name__)

PRETRAINED_NAME = "blip-tiny-synth"
FALLBACK_SIZE = "tiny"


@dataclass
class BenchContext:
    """The model, its weights' provenance, the benchmark split and the feature cache the sections share."""

    model: Any  # cir.models.CirModel
    weights: str  # "shipped weights (...)" or "random weights (...)", for every report
    trained: bool
    sparse: Any | None  # cir.stages.sparse_head.SparseEncoder, or None when no trained sparse head is available
    benchmark: Any  # cir.data.Benchmark
    data: str  # where the benchmark came from, in words
    generated: bool  # True when the benchmark is the temporary fallback (end to end is then skipped)
    cache: FeatureCache

    def describe(self) -> dict[str, Any]:
        return {"model": self.model.config.name, "weights": self.weights, "data": self.data,
                "sparse_head": "shipped" if self.sparse is not None else "none"}


def load_bench_model(name: str = PRETRAINED_NAME) -> tuple[Any, str, bool, Any | None]:
    """(model, provenance, trained?, sparse encoder or None): the shipped weights, else random blip-tiny weights."""
    from ..models import create_model
    from ..pretrained import checkpoint_path, get_pretrained, load_pretrained_model

    spec = get_pretrained(name)
    try:
        model = load_pretrained_model(name)
    except CirError as exc:
        log.warning("%s; measuring with random weights", exc)
        model = create_model(spec.model)
        return model, f"random weights ({spec.model}: shipped checkpoints of {name} absent)", False, None
    sparse = None
    if spec.sparse is not None:
        from ..stages.sparse_head import SparseEncoder

        try:
            sparse = SparseEncoder.load(checkpoint_path(spec.sparse), model)
        except CirError as exc:
            log.warning("%s; sparse vectors will be synthetic", exc)
    return model, f"shipped weights ({name}, trained on {spec.trained_on})", True, sparse


def _open_split(root: Path) -> Any:
    """The val split at `root`, refusing one whose images are not there."""
    from ..data import load_benchmark

    benchmark = load_benchmark("cirr", root, "val")
    first = benchmark.gallery.path(benchmark.gallery.ids[0])
    if not first.is_file():
        raise DatasetNotFoundError(f"{root}: annotations found but not the images (e.g. {first})")
    return benchmark


@contextmanager
def open_context(data: str | Path, cache_dir: str | Path) -> Iterator[BenchContext]:
    """The model and the val split at `data`, or a tiny synthetic one generated for the duration of the block."""
    model, weights, trained, sparse = load_bench_model()
    with tempfile.TemporaryDirectory(prefix="cir-bench-") as scratch:
        try:
            benchmark, where, generated = _open_split(Path(data)), f"{data} (val split)", False
        except DatasetNotFoundError as exc:
            from ..data.synth import generate

            log.warning("%s; generating a %s synthetic benchmark for the real vectors", exc, FALLBACK_SIZE)
            root = generate(Path(scratch) / "synth", size=FALLBACK_SIZE, progress=False)
            benchmark, generated = _open_split(root), True
            where = (f"a {FALLBACK_SIZE} synthetic benchmark generated for this run (val split; {data} holds no "
                     f"generated dataset: `cir data synth --out {data}` writes one)")
            cache_dir = Path(scratch) / "cache"  # features of a throw-away gallery stay out of the user's cache
        yield BenchContext(model, weights, trained, sparse, benchmark, where, generated, FeatureCache(cache_dir))
