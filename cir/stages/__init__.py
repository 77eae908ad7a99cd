"""What plugs into the Pipeline: stage-one retrievers and stage-two rerankers (inference only).

    from cir.stages import DenseRetriever, DualEncoderReranker, SparseRetriever

Names resolve lazily, so `import cir.stages` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DenseRetriever": "dense",
    "SparseRetriever": "sparse",
    "DualEncoderReranker": "rerank",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
