"""Modifications with a known meaning: add, remove, recolour, reshape, resize, move.

Every edit acts on one cell of a structured scene, so applying it is exact and two scenes can be diffed back into
the single edit between them (which is how the tests prove that img_set members are one edit from the target).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence, Union

from .scene import COLOURS, MAX_OBJECTS, MIN_OBJECTS, SHAPES, SIZES, Scene, SceneObject, random_object

Cell = tuple[int, int]
EDIT_KINDS = ("add", "remove", "recolour", "reshape", "resize", "move")
# Attribute edits: which field each changes and which values it may take.
ATTRIBUTE_EDITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "recolour": ("colour", tuple(COLOURS)),
    "reshape": ("shape", SHAPES),
    "resize": ("size", SIZES),
}


@dataclass(frozen=True)
class Edit:
    """One change to one cell. `value` is the new attribute (recolour/reshape/resize), the destination cell (move),
    the new object (add) or None (remove)."""

    kind: str
    cell: Cell
    value: Union[str, Cell, SceneObject, None] = None

    def touched_cells(self) -> set[Cell]:
        """Cells whose content this edit changes (two for a move)."""
        return {self.cell, self.value} if self.kind == "move" else {self.cell}

    def to_dict(self) -> dict[str, object]:
        """The edit's type and arguments, as stored in metadata.json."""
        data: dict[str, object] = {"type": self.kind, "cell": list(self.cell)}
        if self.kind == "add":
            data["object"] = self.value.to_dict()
        elif self.kind == "move":
            data["to"] = list(self.value)
        elif self.kind in ATTRIBUTE_EDITS:
            data["to"] = self.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Edit":
        """Inverse of `to_dict`."""
        cell = tuple(data["cell"])
        if data["type"] == "add":
            return cls("add", cell, SceneObject(**data["object"]))
        if data["type"] == "move":
            return cls("move", cell, tuple(data["to"]))
        return cls(data["type"], cell, data.get("to"))


Modification = tuple[Edit, ...]  # one edit, or two on disjoint cells (a compound)


def modification_record(modification: Modification) -> dict[str, object]:
    """A query's edit as stored in metadata.json: one edit's dict, or a compound with its two parts."""
    if len(modification) == 1:
        return modification[0].to_dict()
    return {"type": "compound", "parts": [edit.to_dict() for edit in modification]}


def modification_from_record(record: dict) -> Modification:
    """The edits of a query's metadata record (`{"type": "compound", "parts": [...]}` or one edit)."""
    parts = record["parts"] if record["type"] == "compound" else [record]
    return tuple(Edit.from_dict(part) for part in parts)


def apply(scene: Scene, edit: Edit) -> Scene:
    """The scene after `edit`; raises ValueError when the edit does not fit the scene."""
    obj = scene.at(edit.cell)
    if edit.kind == "add":
        if obj is not None or edit.value.cell != edit.cell:
            raise ValueError(f"cannot add at occupied or mismatched cell {edit.cell}")
        result = scene.with_object(edit.value)
    elif obj is None:
        raise ValueError(f"no object at {edit.cell} to {edit.kind}")
    elif edit.kind == "remove":
        result = scene.without(edit.cell)
    elif edit.kind == "move":
        if scene.at(edit.value) is not None:
            raise ValueError(f"cannot move onto occupied cell {edit.value}")
        result = scene.replaced(edit.cell, obj.moved(edit.value))
    else:
        attribute = ATTRIBUTE_EDITS[edit.kind][0]
        if getattr(obj, attribute) == edit.value:
            raise ValueError(f"{edit.kind} to the value it already has ({edit.value})")
        result = scene.replaced(edit.cell, obj.with_attribute(attribute, edit.value))
    if not MIN_OBJECTS <= len(result) <= MAX_OBJECTS:
        raise ValueError(f"{edit.kind} leaves {len(result)} objects")
    return result


def apply_all(scene: Scene, modification: Sequence[Edit]) -> Scene:
    for edit in modification:
        scene = apply(scene, edit)
    return scene


def edit_between(source: Scene, target: Scene) -> Edit | None:
    """The single edit turning `source` into `target`, or None when they are not exactly one edit apart."""
    src = {o.cell: o for o in source}
    dst = {o.cell: o for o in target}
    gone = [c for c in src if c not in dst]
    new = [c for c in dst if c not in src]
    changed = [c for c in src if c in dst and src[c] != dst[c]]
    if not changed and not gone and len(new) == 1:
        return Edit("add", new[0], dst[new[0]])
    if not changed and not new and len(gone) == 1:
        return Edit("remove", gone[0])
    if not changed and len(gone) == 1 and len(new) == 1 and src[gone[0]].moved(new[0]) == dst[new[0]]:
        return Edit("move", gone[0], new[0])
    if not gone and not new and len(changed) == 1:
        before, after = src[changed[0]], dst[changed[0]]
        differing = [kind for kind, (attr, _) in ATTRIBUTE_EDITS.items()
                     if getattr(before, attr) != getattr(after, attr)]
        if len(differing) == 1:
            kind = differing[0]
            return Edit(kind, changed[0], getattr(after, ATTRIBUTE_EDITS[kind][0]))
    return None


def possible_kinds(scene: Scene) -> list[str]:
    """Edit kinds that fit the scene (object-count limits, a free cell to move to or add at)."""
    has_room = len(scene) < MAX_OBJECTS
    kinds = ["recolour", "reshape", "resize"]
    if has_room:
        kinds += ["add", "move"]
    if len(scene) > MIN_OBJECTS:
        kinds.append("remove")
    return [k for k in EDIT_KINDS if k in kinds]


def random_edit(scene: Scene, kind: str, rng: random.Random, cell: Cell | None = None,
                avoid: set[Cell] = frozenset()) -> Edit:
    """A random edit of `kind` that fits `scene`, acting on `cell` if given, touching no cell in `avoid`.

    Raises ValueError when no such edit exists (e.g. add on a full grid)."""
    free = [c for c in scene.empty_cells() if c not in avoid]
    occupied = [o.cell for o in scene if o.cell not in avoid]
    if kind == "add":
        if not free or len(scene) >= MAX_OBJECTS:
            raise ValueError("no room to add")
        where = rng.choice(free)
        return Edit("add", where, random_object(rng, where))
    if cell is None:
        if not occupied:
            raise ValueError(f"no object to {kind}")
        cell = rng.choice(occupied)
    if kind == "remove":
        if len(scene) <= MIN_OBJECTS:
            raise ValueError("cannot remove the only object")
        return Edit("remove", cell)
    if kind == "move":
        if not free:
            raise ValueError("no free cell to move to")
        return Edit("move", cell, rng.choice(free))
    attribute, values = ATTRIBUTE_EDITS[kind]
    current = getattr(scene.at(cell), attribute)
    return Edit(kind, cell, rng.choice([v for v in values if v != current]))


def edits_at(scene: Scene, cell: Cell) -> list[Edit]:
    """Every edit acting on `cell`: each attribute change, move and removal of its object, or, if it is empty,
    each object that could be added there. Some may break object-count limits; `apply` rejects those."""
    obj = scene.at(cell)
    if obj is None:
        return [Edit("add", cell, SceneObject(cell[0], cell[1], shape, colour, size))
                for shape in SHAPES for colour in COLOURS for size in SIZES]
    changes = [Edit(kind, cell, value) for kind, (attribute, values) in ATTRIBUTE_EDITS.items()
               for value in values if value != getattr(obj, attribute)]
    return changes + [Edit("move", cell, free) for free in scene.empty_cells()] + [Edit("remove", cell)]


def all_cells_touched(modification: Sequence[Edit]) -> set[Cell]:
    return set().union(*(e.touched_cells() for e in modification))

