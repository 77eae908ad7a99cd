"""The layout by job: every cir module's imports (top-level and inside functions) point down the layers, the
folders import each other without a cycle, and the public surface is lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cir"

# Lower numbers are lower layers: a module may import its own layer or below, never above.
LAYERS = {
    "_lazy": 0, "errors": 0, "io": 0, "types": 0, "machine": 0, "registry": 0,
    "config": 1, "cache": 1,
    "models": 2, "index": 2, "data": 2,
    "pipeline": 3, "stages": 3, "eval": 3,
    "experiment": 4, "train": 4, "bench": 4,
    "cli": 5, "serve": 5,
    "__main__": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported cir module, at module level?) for every import statement of a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        guarded = _under_type_checking(tree, node)
        found += [(name, id(node) in top_level) for name in names if name.split(".")[0] == "cir" and not guarded]
    return found


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            if any(child is target for child in ast.walk(node)):
                return True
    return False


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def all_modules() -> dict[str, list[tuple[str, bool]]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_folder_and_module_has_a_layer() -> None:
    components = {component(m) for m in all_modules()} - {"__init__"}
    assert components <= set(LAYERS), f"no layer for {sorted(components - set(LAYERS))}"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, found in all_modules().items():
        if module == "cir":
            continue
        own = LAYERS[component(module)]
        for target, _ in found:
            if target != "cir" and LAYERS[component(target)] > own:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_folders_import_each_other_without_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module, found in all_modules().items():
        source = component(module)
        for target, _ in found:
            if component(target) != source and target != "cir":
                graph.setdefault(source, set()).add(component(target))
    assert _cycle(graph) is None


def test_no_module_level_import_cycle() -> None:
    graph = {module: {t for t, at_top in found if at_top} for module, found in all_modules().items()}
    assert _cycle(graph) is None


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_data_never_imports_eval() -> None:
    offenders = [(m, t) for m, found in all_modules().items() if component(m) == "data" for t, _ in found
                 if component(t) == "eval"]
    assert offenders == []


def test_no_stage_imports_the_shipped_weights_registry() -> None:
    offenders = [(m, t) for m, found in all_modules().items() if component(m) == "stages" for t, _ in found
                 if t == "cir.models.pretrained"]
    assert offenders == []


def test_one_class_per_name() -> None:
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                names.setdefault(node.name, []).append(module_name(path))
    assert {name: where for name, where in names.items() if len(where) > 1} == {}


def test_the_public_surface_is_lazy_and_complete() -> None:
    code = (
        "import sys, cir\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'numba', 'rich') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "from cir import (Pipeline, Retriever, Reranker, Query, Gallery, Ranking, Run, Result, create_model,\n"
        "                 list_pretrained, load_benchmark)\n"
        "assert ('blip-tiny', 'synth') in list_pretrained()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["NoSuchThing"])
def test_an_unknown_public_name_is_an_attribute_error(name) -> None:
    import cir

    with pytest.raises(AttributeError):
        getattr(cir, name)
