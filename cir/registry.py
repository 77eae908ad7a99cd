"""Name -> factory registries, so the CLI, the server and the Pipeline find stages and models by name.

Entries may be registered lazily as "module:attribute" strings, so that `cir`'s core never imports a stage
(or a heavy optional backend) until it is asked for. A registry with an entry-point group also finds what other
installed distributions declare there (`[project.entry-points."cir.retrievers"]`), so a new stage is a new package
and never an edit of cir.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from .errors import CirError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T | str] = {}
        self._origin: dict[str, str] = {}

    def register(self, name: str, target: T | str | None = None) -> Any:
        """Register `target` (an object or a lazy "module:attr" string); without it, act as a decorator."""
        if target is None:
            def decorator(obj: T) -> T:
                self._entries[name] = obj
                return obj
            return decorator
        self._entries[name] = target
        return target

    def _plugins(self) -> dict[str, Any]:
        """Entry points of the group declared by installed distributions, by name."""
        if self.group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def get(self, name: str) -> T:
        entry = self._entries.get(name)
        if entry is None:
            plugin = self._plugins().get(name)
            if plugin is None:
                raise CirError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})")
            try:
                entry = plugin.load()
            except Exception as exc:  # a broken plugin must not take the CLI down with a traceback
                raise CirError(f"{self.kind} {name!r} from entry point {plugin.value!r} failed to load: {exc}") from exc
            self._entries[name] = entry
            self._origin[name] = _distribution(plugin)
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(self._plugins()))

    def origin(self, name: str) -> str:
        """Where a name comes from: "cir" for a built-in, else the distribution that declares it."""
        if name in self._origin:
            return self._origin[name]
        plugin = self._plugins().get(name) if name not in self._entries else None
        return _distribution(plugin) if plugin is not None else "cir"

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._plugins()


def _distribution(entry_point: Any) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else entry_point.value


retrievers: Registry[Callable] = Registry("stage-one retriever", group="cir.retrievers")
rerankers: Registry[Callable] = Registry("stage-two reranker", group="cir.rerankers")

# The built-in stages, imported only when asked for by name.
retrievers.register("dense", "cir.stages.dense:DenseRetriever")
retrievers.register("sparse", "cir.stages.sparse:SparseRetriever")
retrievers.register("hybrid", "cir.stages.hybrid:HybridRetriever")
rerankers.register("dual-encoder", "cir.stages.rerank:DualEncoderReranker")
