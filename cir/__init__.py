"""cir: two-stage composed image retrieval.

    from cir import Pipeline, Query
    pipe = Pipeline.from_pretrained("blip-tiny", pretrained="synth").index("data/synth/val")

The public names resolve lazily, so `import cir` stays cheap (no torch until a model or stage is asked for).
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
