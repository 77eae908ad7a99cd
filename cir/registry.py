"""Name -> factory registries, so the CLI and the Pipeline find stages and models by name.

Entries may be registered lazily as "module:attribute" strings, so that `cir`'s core never imports a stage
(or a heavy optional backend) until it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

from .errors import CirError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Any:
        """Register `target` (an object or a lazy "module:attr" string); without it, act as a decorator."""
        if target is None:
            def decorator(obj: T) -> T:
                self._entries[name] = obj
                return obj
            return decorator
        self._entries[name] = target
        return target

    def get(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise CirError(f"unknown {self.kind} {name!r} (known: {known})") from None
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


retrievers: Registry[Callable] = Registry("stage-one retriever")
rerankers: Registry[Callable] = Registry("stage-two reranker")

# The built-in stages, imported only when asked for by name.
retrievers.register("dense", "cir.stages.dense:DenseRetriever")
retrievers.register("sparse", "cir.stages.sparse:SparseRetriever")
rerankers.register("dual-encoder", "cir.stages.rerank:DualEncoderReranker")
