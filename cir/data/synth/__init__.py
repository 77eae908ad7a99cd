"""A generated composed-image-retrieval benchmark in the CIRR layout: the offline default of cir.

Scenes of coloured shapes on a 3x3 grid, modification texts with a known meaning, and per query an img_set of
near-duplicates; see `generate` for the files written.
"""

from .layout import (
    complete_splits, is_complete, load_metadata, missing_split_hint, split_metadata, synthetic_hint, write_command,
)
from .writer import SIZES, ensure_synthetic, generate
from .oracle import oracle_run

__all__ = [
    "SIZES", "complete_splits", "ensure_synthetic", "generate", "is_complete", "load_metadata", "missing_split_hint",
    "oracle_run", "split_metadata", "synthetic_hint", "write_command",
]
