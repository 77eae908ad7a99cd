"""The oracle run of a synthetic split, built from metadata.json: proof that the evaluation can reach 100."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from ...types import Ranking, Run
from .layout import split_metadata


def oracle_run(root: Path, split: str, depth: int | None = 100) -> Run:
    """Per query (id = str(pairid)): the target, then the other img_set members, then the rest of the split's
    gallery in name order; the reference is left out (CIRR protocol). Truncated to `depth` (None: whole gallery)."""
    content = split_metadata(root, split)
    gallery = sorted(content["scenes"])
    img_sets = content["img_sets"]
    rankings = []
    for query_id, query in content["queries"].items():
        first = [query["target"]] + [m for m in img_sets[str(query["img_set"])] if m != query["target"]]
        first = [name for name in first if name != query["reference"]]
        chosen = set(first) | {query["reference"]}
        rest = (name for name in gallery if name not in chosen)
        ids = first + list(rest if depth is None else islice(rest, max(0, depth - len(first))))
        ids = ids if depth is None else ids[:depth]
        rankings.append(Ranking(query_id, ids, [float(len(ids) - rank) for rank in range(len(ids))]))
    return Run(rankings, name=f"oracle-synth-{split}")
