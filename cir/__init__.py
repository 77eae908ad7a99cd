"""cir: two-stage composed image retrieval.

    from cir import Pipeline, Query
    pipe = Pipeline.from_pretrained("blip-tiny", pretrained="synth").index("data/synth/val")

The public names resolve lazily, so `import cir` stays cheap (no torch until a model or stage is asked for).
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "CirError": "errors",
    "Gallery": "types",
    "Query": "types",
    "Ranking": "types",
    "Run": "types",
    "Pipeline": "pipeline",
    "Retriever": "pipeline",
    "Reranker": "pipeline",
    "Result": "pipeline",
    "create_model": "models",
    "list_pretrained": "models",
    "load_benchmark": "data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
