"""What plugs into the Pipeline: stage-one retrievers and stage-two rerankers (inference only).

    from cir.stages import DenseRetriever, DualEncoderReranker, SparseRetriever

Names resolve lazily, so `import cir.stages` does not import torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "DenseRetriever": "dense",
    "SparseRetriever": "sparse",
    "DualEncoderReranker": "rerank",
    "HybridRetriever": "hybrid",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
