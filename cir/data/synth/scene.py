"""Structured scenes: up to five objects on a 3x3 grid, their canonical key and plain-English description.

A scene's identity is what a caption can talk about (which shape, colour and size sits in which cell); nuisance
such as background, jitter and rotation belongs to the renderer, so two renders of one scene share one key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Iterable, Iterator

GRID = 3
CELLS: tuple[tuple[int, int], ...] = tuple((row, col) for row in range(GRID) for col in range(GRID))
MIN_OBJECTS, MAX_OBJECTS = 1, 5

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "crescent")
# Clearly distinct hues, named the way people name them; RGB is the renderer's base colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (245, 133, 24),
    "yellow": (240, 206, 30),
    "green": (44, 160, 60),
    "cyan": (23, 190, 207),
    "blue": (36, 76, 214),
    "purple": (132, 60, 190),
    "pink": (247, 129, 191),
}
SIZES = ("small", "large")

OBJECT_FIELDS = ("row", "col", "shape", "colour", "size")  # SceneObject's fields, in order
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "centre", "right")


@dataclass(frozen=True, order=True)
class SceneObject:
    """One object: where it sits (row, col) and the three attributes a caption can name."""

    row: int
    col: int
    shape: str
    colour: str
    size: str

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    def moved(self, cell: tuple[int, int]) -> "SceneObject":
        return replace(self, row=cell[0], col=cell[1])

    def with_attribute(self, attribute: str, value: str) -> "SceneObject":
        return replace(self, **{attribute: value})

    def noun_phrase(self) -> str:
        """'small red circle': the full attribute description, without article."""
        return f"{self.size} {self.colour} {self.shape}"

    def to_dict(self) -> dict[str, object]:
        return {"row": self.row, "col": self.col, "shape": self.shape, "colour": self.colour, "size": self.size}


def cell_name(cell: tuple[int, int]) -> str:
    """Canonical position words: 'top left', 'middle centre', 'bottom right'."""
    return f"{ROW_NAMES[cell[0]]} {COL_NAMES[cell[1]]}"


@dataclass(frozen=True)
class Scene:
    """A set of objects, at most one per cell, kept sorted by cell so equal scenes compare equal."""

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell: {cells}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects)))

    def __iter__(self) -> Iterator[SceneObject]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    @cached_property
    def key(self) -> str:
        """Canonical identity, e.g. '0,0:small-red-circle|1,1:large-blue-star'; equal keys mean equal scenes."""
        return "|".join(f"{o.row},{o.col}:{o.size}-{o.colour}-{o.shape}" for o in self.objects)

    def description(self) -> str:
        """Canonical English description, one clause per object in reading order."""
        return "; ".join(f"a {o.noun_phrase()} in the {cell_name(o.cell)}" for o in self.objects)

    def at(self, cell: tuple[int, int]) -> SceneObject | None:
        return next((o for o in self.objects if o.cell == cell), None)

    def empty_cells(self) -> list[tuple[int, int]]:
        taken = {o.cell for o in self.objects}
        return [c for c in CELLS if c not in taken]

    def without(self, cell: tuple[int, int]) -> "Scene":
        return Scene(tuple(o for o in self.objects if o.cell != cell))

    def replaced(self, cell: tuple[int, int], new: SceneObject) -> "Scene":
        return Scene(tuple(o for o in self.objects if o.cell != cell) + (new,))

    def with_object(self, new: SceneObject) -> "Scene":
        return Scene(self.objects + (new,))

    def to_rows(self) -> list[list[object]]:
        """Compact structured form for metadata.json: one [row, col, shape, colour, size] list per object."""
        return [[getattr(o, f) for f in OBJECT_FIELDS] for o in self.objects]

    @classmethod
    def from_rows(cls, rows: Iterable[Iterable[object]]) -> "Scene":
        return cls(tuple(SceneObject(*row) for row in rows))


def random_object(rng: random.Random, cell: tuple[int, int]) -> SceneObject:
    return SceneObject(cell[0], cell[1], rng.choice(SHAPES), rng.choice(tuple(COLOURS)), rng.choice(SIZES))


def random_scene(rng: random.Random, counts: Iterable[int] = range(MIN_OBJECTS, MAX_OBJECTS + 1)) -> Scene:
    """A scene with a uniformly drawn number of objects (from `counts`) in random cells with random attributes."""
    n = rng.choice(tuple(counts))
    return Scene(tuple(random_object(rng, cell) for cell in rng.sample(CELLS, n)))
