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

PRETRAINED = ("blip-tiny", "synth")  # (model, tag) of the shipped weights the bench measures
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


def _shipped(file: str | None) -> Path | None:
    """The path of a shipped checkpoint file, None when it is absent (logged)."""
    from ..models.pretrained import checkpoint_path

    if file is None:
        return None
    try:
        return checkpoint_path(file)
    except CirError as exc:
        log.warning("%s", exc)
        return None


def load_bench_model(name: str = PRETRAINED[0], tag: str = PRETRAINED[1]) -> tuple[Any, str, bool, Any | None]:
    """(model, provenance, stage one trained?, sparse encoder or None) from the shipped weights; a part whose file
    is absent gets random weights, said so in every report (speed does not depend on weight values; the vectors
    stage one is measured on do). A shipped file that is present but broken is an error."""
    from ..models import create_model
    from ..models.pretrained import get_pretrained

    spec = get_pretrained(name, tag)
    stage1, stage2 = _shipped(spec.stage1), _shipped(spec.stage2)
    if stage1 is None:
        return create_model(name), f"random weights ({name}; the shipped {tag} checkpoints are absent)", False, None
    model = create_model(name, [p for p in (stage1, stage2) if p], stages=("stage1", "stage2"))
    model.pretrained_cfg = {"stage1_weight": spec.stage1_weight} if stage2 is not None else {}
    weights = f"shipped weights ({name} {tag}, trained on {spec.trained_on})"
    if stage2 is None:
        weights += "; stage two: random weights (its checkpoint is absent)"
    sparse_file = _shipped(spec.sparse)
    sparse = None
    if sparse_file is not None:
        from ..stages.sparse_head import SparseEncoder

        sparse = SparseEncoder.load(sparse_file, model)
    return model, weights, True, sparse


def _open_split(root: Path) -> Any:
    """The val split at `root`, refusing one whose images are not there."""
    from ..data import load_benchmark

    benchmark = load_benchmark("cirr", root, "val")
    first = benchmark.gallery.path(benchmark.gallery.ids[0])
    if not first.is_file():
        raise DatasetNotFoundError(f"{root}: annotations found but not the images (e.g. {first})")
    return benchmark


@contextmanager
def open_context(data: str | Path, cache_dir: str | Path, word_terms: bool = True) -> Iterator[BenchContext]:
    """The model and the val split at `data`, or a tiny synthetic one generated for the duration of the block;
    without `word_terms`, the sparse heads' distilled terms alone."""
    model, weights, trained, sparse = load_bench_model()
    if sparse is not None and sparse.words is not None and not word_terms:
        sparse, weights = sparse.distilled(), weights + "; sparse heads: distilled terms only (no word terms)"
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
