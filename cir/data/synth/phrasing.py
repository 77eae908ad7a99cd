"""Modification texts: templates and paraphrases per edit kind, unambiguous object references, held-out phrasings.

Train and val captions use TRAIN_TEMPLATES; test captions use HELDOUT_TEMPLATES only (other verbs and sentence
frames, same attribute and position words), so the test split measures generalisation to unseen phrasing.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from .edits import ATTRIBUTE_EDITS, Edit, apply
from .scene import Scene, SceneObject

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
COMPARATIVES = {"small": ("smaller",), "large": ("bigger", "larger")}
SIZE_VERBS = {"small": "shrink", "large": "enlarge"}
SCALE_DIRECTIONS = {"small": "down", "large": "up"}
THINGS = ("object", "shape", "one", "thing")
PLACE_WORDS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("top left", "top-left", "top left corner"),
    (0, 1): ("top centre", "top middle", "top"),
    (0, 2): ("top right", "top-right", "top right corner"),
    (1, 0): ("middle left", "left", "centre left"),
    (1, 1): ("centre", "middle"),
    (1, 2): ("middle right", "right", "centre right"),
    (2, 0): ("bottom left", "bottom-left", "bottom left corner"),
    (2, 1): ("bottom centre", "bottom middle", "bottom"),
    (2, 2): ("bottom right", "bottom-right", "bottom right corner"),
}

# Slots: {obj} a unique reference to the edited object, {new} 'a small red circle', {place} 'the top left',
# {in_place} 'in the top left', {colour} {shape} {size} the new value, {comparative} {size_verb} {scale}.
TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("add {new} {in_place}", "put {new} {in_place}", "place {new} {in_place}", "insert {new} {in_place}",
            "include {new} {in_place}", "there should also be {new} {in_place}", "{in_place}, add {new}"),
    "remove": ("remove {obj}", "delete {obj}", "take away {obj}", "take out {obj}", "drop {obj}",
               "{obj} should be gone", "the same but without {obj}"),
    "recolour": ("make {obj} {colour}", "change {obj} to {colour}", "colour {obj} {colour}", "turn {obj} {colour}",
                 "{obj} should be {colour}", "change the colour of {obj} to {colour}", "recolour {obj} {colour}"),
    "reshape": ("turn {obj} into a {shape}", "change {obj} into a {shape}", "make {obj} a {shape}",
                "{obj} should be a {shape}", "replace {obj} with a {shape}", "change the shape of {obj} to a {shape}"),
    "resize": ("make {obj} {size}", "make {obj} {comparative}", "{obj} should be {size}", "change {obj} to {size}",
               "{size_verb} {obj}", "change the size of {obj} to {size}"),
    "move": ("move {obj} to {place}", "shift {obj} to {place}", "put {obj} {in_place} instead",
             "{obj} should be {in_place}", "move {obj} over to {place}"),
}
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("draw {new} {in_place}", "{in_place}, there is now {new}"),
    "remove": ("get rid of {obj}", "erase {obj}", "{obj} disappears"),
    "recolour": ("paint {obj} {colour}", "{obj} is now {colour}", "dye {obj} {colour}"),
    "reshape": ("transform {obj} into a {shape}", "swap {obj} for a {shape}", "reshape {obj} as a {shape}"),
    "resize": ("scale {obj} {scale}", "resize {obj} to be {size}"),
    "move": ("slide {obj} to {place}", "relocate {obj} to {place}"),
}
TRAIN_CONNECTIVES = ("{a} and {b}", "{a}, then {b}", "{a}, and {b}")
HELDOUT_CONNECTIVES = ("{a}, after that {b}", "{a}, additionally {b}")


def template_pattern(template: str) -> re.Pattern[str]:
    """A case-insensitive regex that finds text produced by `template` (each slot matches any words)."""
    parts = re.split(r"\{[a-z_]+\}", template)
    return re.compile(r"\b" + r".+?".join(re.escape(p) for p in parts).strip() + r"\b", re.IGNORECASE)


def place(cell: tuple[int, int], rng: random.Random) -> str:
    return "the " + rng.choice(PLACE_WORDS[cell])


def in_place(cell: tuple[int, int], rng: random.Random) -> str:
    return rng.choice(("in ", "at ")) + place(cell, rng)


def _descriptors(obj: SceneObject, rng: random.Random) -> list[tuple[str, Callable[[SceneObject], bool], float]]:
    """Candidate references to `obj` as (text, which objects it matches, weight)."""
    size = rng.choice(SIZE_WORDS[obj.size])
    thing = rng.choice(THINGS)
    return [
        (f"the {obj.shape}", lambda o: o.shape == obj.shape, 1.0),
        (f"the {obj.colour} {obj.shape}", lambda o: (o.colour, o.shape) == (obj.colour, obj.shape), 3.0),
        (f"the {size} {obj.shape}", lambda o: (o.size, o.shape) == (obj.size, obj.shape), 1.0),
        (f"the {size} {obj.colour} {obj.shape}", lambda o: o.noun_phrase() == obj.noun_phrase(), 1.0),
        (f"the {obj.colour} {thing}", lambda o: o.colour == obj.colour, 1.0),
        (f"the {obj.shape} {in_place(obj.cell, rng)}", lambda o: o.cell == obj.cell, 0.5),
        (f"the {thing} {in_place(obj.cell, rng)}", lambda o: o.cell == obj.cell, 1.0),
    ]


def refer(obj: SceneObject, scenes: Sequence[Scene], rng: random.Random) -> str:
    """A reference that picks out `obj` (same cell) and nothing else in every scene of `scenes`."""
    valid = [
        (text, weight) for text, matches, weight in _descriptors(obj, rng)
        if all([o.cell for o in scene if matches(o)] == [obj.cell] for scene in scenes)
    ]
    texts, weights = zip(*valid)  # never empty: the position references are always unique
    return rng.choices(texts, weights)[0]


def _slots(edit: Edit, scenes: Sequence[Scene], rng: random.Random) -> dict[str, str]:
    """Values for every slot the templates of `edit.kind` use."""
    if edit.kind == "add":
        new = edit.value
        return {"new": f"a {rng.choice(SIZE_WORDS[new.size])} {new.colour} {new.shape}",
                "in_place": in_place(edit.cell, rng)}
    slots = {"obj": refer(scenes[-1].at(edit.cell), scenes, rng)}
    if edit.kind == "move":
        slots.update(place=place(edit.value, rng), in_place=in_place(edit.value, rng))
    elif edit.kind in ATTRIBUTE_EDITS:
        slots[ATTRIBUTE_EDITS[edit.kind][0]] = edit.value
    if edit.kind == "resize":
        slots.update(size=rng.choice(SIZE_WORDS[edit.value]), comparative=rng.choice(COMPARATIVES[edit.value]),
                     size_verb=SIZE_VERBS[edit.value], scale=SCALE_DIRECTIONS[edit.value])
    return slots


def describe(modification: Sequence[Edit], reference: Scene, rng: random.Random,
             heldout: bool) -> tuple[str, list[str]]:
    """A caption for `modification` applied to `reference`, and the templates used (edits, then connective).

    Object references are resolved in the reference scene and, for a compound's second edit, also in the scene
    after the first edit, so a reader applying the clauses in order or all at once finds the same objects."""
    templates = HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES
    clauses, used = [], []
    scenes = [reference]
    for edit in modification:
        template = rng.choice(templates[edit.kind])
        clauses.append(template.format(**_slots(edit, scenes, rng)))
        used.append(template)
        scenes = [reference, apply(scenes[-1], edit)]
    if len(clauses) == 2:
        connective = rng.choice(HELDOUT_CONNECTIVES if heldout else TRAIN_CONNECTIVES)
        used.append(connective)
        text = connective.format(a=clauses[0], b=clauses[1])
    else:
        text = clauses[0]
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text, used
