"""The per-query table: each query, what the benchmark knows of it, and where each run ranked its target.

Ranks follow the scoring rules of `cir.eval.metrics`: the reference is dropped first when the protocol excludes it,
a rank is 1-based, and it is the rank of the first target the ranking reaches (CIRCO has several). So a query counts
for Recall@K exactly when its rank is at most K, and for Recall_subset@K when its subset rank (the rank among the
img_set members other than the reference, CIRR only) is at most K. A target the ranking never reaches has no rank.

What the benchmark knows: FashionIQ the category; the synthetic benchmark (its metadata.json, written by
`cir data synth`) the edit type ("compound" for two edits, with their kinds in `parts`), and whether the query is
phrased with a held-out template or connective; CIRR and CIRCO nothing more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

from ..errors import require
from .metrics import restrict_to

if TYPE_CHECKING:
    import pandas as pd

    from ..data.benchmark import Benchmark
    from ..types import Run

QUERY_COLUMNS = ("query_id", "reference", "text", "target", "targets")
RANK_PREFIXES = ("rank ", "subset_rank ")
# Groups in a natural order where the values are known (edit kinds, then compound; FashionIQ's categories).
GROUP_ORDER = ("add", "remove", "recolour", "reshape", "resize", "move", "compound", "dress", "shirt", "toptee",
               "False", "True")


def first_rank(ids: Sequence[str], targets: Collection[str], reference: str | None = None) -> int | None:
    """1-based rank of the first target in `ids` once `reference` (if given) is dropped; None if none is there."""
    position = 0
    for image_id in ids:
        if image_id == reference:
            continue
        position += 1
        if image_id in targets:
            return position
    return None


def rank_column(run: str) -> str:
    return f"rank {run}"


def subset_rank_column(run: str) -> str:
    return f"subset_rank {run}"


def synthetic_attributes(root: str | os.PathLike | None, split: str) -> dict[str, dict[str, Any]]:
    """Query id -> {edit, parts, compound, heldout_phrasing} from a synthetic benchmark's metadata.json; empty for
    any other folder (or none)."""
    from ..data.synth.layout import read_own_metadata

    metadata = read_own_metadata(Path(root)) if root is not None else None
    if metadata is None or split not in metadata.get("splits", {}):
        return {}
    heldout = metadata["phrasings"]["heldout"]
    held_templates = {t for group in heldout["templates"].values() for t in group} | set(heldout["connectives"])
    attributes = {}
    for pairid, query in metadata["splits"][split]["queries"].items():
        edit = query["edit"]
        parts = [p["type"] for p in edit["parts"]] if edit["type"] == "compound" else [edit["type"]]
        attributes[pairid] = {
            "edit": edit["type"],
            "parts": "+".join(parts),
            "compound": edit["type"] == "compound",
            "heldout_phrasing": bool(held_templates & set(query.get("templates", ()))),
        }
    return attributes


def query_table(benchmark: Benchmark, runs: Mapping[str, Run], root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per query of `benchmark` (in its order): query_id, reference, text, target (the first), targets
    (how many), the benchmark's fields (category; edit, parts, compound, heldout_phrasing), then per run
    `rank <run>` and, with subsets, `subset_rank <run>` (nullable integers)."""
    pd = require("pandas", "report")
    targets = benchmark.targets or {}
    synthetic = synthetic_attributes(root, benchmark.split) if benchmark.name == "cirr" else {}
    records = []
    for query in benchmark.queries:
        wanted = targets.get(query.id, [])
        record: dict[str, Any] = {"query_id": query.id, "reference": query.reference, "text": query.text,
                                  "target": wanted[0] if wanted else None, "targets": len(wanted)}
        if benchmark.category is not None:
            record["category"] = benchmark.category
        record.update(synthetic.get(query.id, {}))
        reference = query.reference if benchmark.exclude_reference else None
        for name, run in runs.items():
            ids = run[query.id].ids if query.id in run else []
            record[rank_column(name)] = first_rank(ids, set(wanted), reference)
            if benchmark.subsets:
                record[subset_rank_column(name)] = first_rank(restrict_to(ids, benchmark.subsets[query.id]), set(wanted))
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:
        if column.startswith(RANK_PREFIXES):
            frame[column] = frame[column].astype("Int64")
    return frame


def query_fields(frame: pd.DataFrame) -> list[str]:
    """The columns of a per-query table a breakdown can group by: what the benchmark knows of its queries."""
    return [c for c in frame.columns if c not in QUERY_COLUMNS and not c.startswith(RANK_PREFIXES)]


def group_order(values: Sequence[str]) -> list[str]:
    """`values` with the known ones in their natural order first (edit kinds, categories), the rest sorted."""
    known = [v for v in GROUP_ORDER if v in values]
    return known + sorted(v for v in values if v not in GROUP_ORDER)
