"""The structure of one split: which scenes exist, which queries link them, and each query's img_set.

A group is six distinct scenes around one target T: a reference R one edit (or a two-edit compound) away, and four
hard negatives one edit from T (for a single edit, preferably also one edit from R: the same object edited another
way). A single-edit group carries three queries (R -> T, and N -> T for two negatives N), all with the same img_set,
since every member but T is one edit from T; a compound group carries one, and its negatives start with the two
half-done states (only one of the two edits applied). Distractors (evaluation splits) are one edit from a query's
reference, often of the kind its text names, so the reference alone cannot find the target. Scene keys are unique
within the split, so every query has exactly one target.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .edits import (
    Edit, Modification, all_cells_touched, apply, apply_all, edit_between, edits_at, possible_kinds, random_edit,
)
from .phrasing import describe
from .scene import Scene, random_scene

COMPOUND_FRACTION = 0.45  # of groups; a compound group has one query, so about 21% of queries are compounds
QUERIES_PER_SINGLE_EDIT_GROUP = 3
IMG_SET_SIZE = 6
FOCUS_PROBABILITY = 0.6  # how often a negative edits an object the modification touched
MAX_TRIES = 200


@dataclass
class PlannedQuery:
    pairid: int
    reference: str
    target: str
    modification: Modification
    caption: str
    templates: list[str]
    img_set_id: int
    members: list[str]


@dataclass
class SplitPlan:
    """Everything to write for one split: scenes by image name (gallery order) and the queries."""

    split: str
    scenes: dict[str, Scene] = field(default_factory=dict)
    queries: list[PlannedQuery] = field(default_factory=list)


@dataclass
class _Group:
    reference: Scene
    target: Scene
    modification: Modification
    negatives: list[Scene]


def _random_modification(scene: Scene, rng: random.Random, compound: bool) -> Modification:
    """One edit, or two edits on disjoint cells; raises ValueError when the drawn kinds do not fit."""
    first = random_edit(scene, rng.choice(possible_kinds(scene)), rng)
    if not compound:
        return (first,)
    second = random_edit(scene, rng.choice(possible_kinds(scene)), rng, avoid=first.touched_cells())
    apply_all(scene, (first, second))  # validates object-count limits of the pair
    return (first, second)


def _neighbour(scene: Scene, rng: random.Random, focus: list[tuple[int, int]]) -> Scene:
    """`scene` after one random edit, on a focus cell with probability FOCUS_PROBABILITY."""
    kinds = possible_kinds(scene)
    if focus and rng.random() < FOCUS_PROBABILITY:
        kind = rng.choice([k for k in kinds if k != "add"])
        return apply(scene, random_edit(scene, kind, rng, cell=rng.choice(focus)))
    return apply(scene, random_edit(scene, rng.choice(kinds), rng))


def _near_both(reference: Scene, target: Scene, edit: Edit, rng: random.Random) -> Iterator[Scene]:
    """Scenes one edit from both the reference and the target, in random order: the edited cell changed another
    way (another colour, shape, destination, added object...). Only the text's arguments tell them from the target,
    and the reference is no closer to the target than to them. None for resize (two sizes leave no third way)."""
    alternatives = edits_at(reference, edit.cell)
    rng.shuffle(alternatives)
    for alternative in alternatives:
        try:
            scene = apply(reference, alternative)
        except ValueError:
            continue
        if scene != target and edit_between(target, scene) is not None:
            yield scene


def _draw_group(rng: random.Random, used: set[str], compound: bool) -> _Group | None:
    """A reference, target and four negatives with keys new to the split, or None if this draw fails."""
    reference = random_scene(rng)
    try:
        modification = _random_modification(reference, rng, compound)
    except ValueError:
        return None
    target = apply_all(reference, modification)
    fresh = {reference.key, target.key}  # keys of this group (the split's `used` is never copied: it is large)
    if len(fresh) != 2 or fresh & used:
        return None
    negatives = [apply(reference, e) for e in modification] if compound else []
    if any(n.key in used for n in negatives):
        return None
    fresh.update(n.key for n in negatives)
    focus = [c for c in all_cells_touched(modification) if target.at(c) is not None]
    candidates = iter(()) if compound else _near_both(reference, target, modification[0], rng)
    for _ in range(MAX_TRIES):
        if len(negatives) == IMG_SET_SIZE - 2:
            break
        candidate = next(candidates, None) or _neighbour(target, rng, focus)
        if candidate.key not in used and candidate.key not in fresh:
            negatives.append(candidate)
            fresh.add(candidate.key)
    return _Group(reference, target, modification, negatives) if len(negatives) == IMG_SET_SIZE - 2 else None


class _SplitBuilder:
    """Accumulates groups into a SplitPlan, naming images and numbering pairs and img_sets."""

    def __init__(self, split: str, rng: random.Random, first_pairid: int, heldout: bool) -> None:
        self.plan = SplitPlan(split)
        self.rng = rng
        self.next_pairid = first_pairid
        self.heldout = heldout
        self.used: set[str] = set()
        self.img_sets = 0

    def _name(self, scene: Scene, label: str) -> str:
        name = f"{self.plan.split}-{self.img_sets:05d}-{label}"
        self.plan.scenes[name] = scene
        self.used.add(scene.key)
        return name

    def _query(self, reference: str, target: str, modification: Modification, members: list[str]) -> None:
        caption, templates = describe(modification, self.plan.scenes[reference], self.rng, self.heldout)
        self.plan.queries.append(PlannedQuery(self.next_pairid, reference, target, modification, caption,
                                              templates, self.img_sets, members))
        self.next_pairid += 1

    def _distractor(self, reference: Scene, text_kinds: list[str]) -> Scene | None:
        """A new scene one edit from `reference`; half the time of a kind the query's text names, so that only its
        arguments (which object, which value, where) tell the distractor from the target."""
        allowed = possible_kinds(reference)
        named = [k for k in text_kinds if k in allowed]
        for _ in range(MAX_TRIES):
            kind = self.rng.choice(named if named and self.rng.random() < 0.5 else allowed)
            scene = apply(reference, random_edit(reference, kind, self.rng))
            if scene.key not in self.used:
                return scene
        return None

    def add_group(self, group: _Group, queries: int, distractors: int) -> None:
        """Name the six members in shuffled order (names must not reveal roles), add `queries` queries and
        `distractors` distractors around each query's reference."""
        scenes = [group.reference, group.target, *group.negatives]
        order = list(range(IMG_SET_SIZE))
        self.rng.shuffle(order)
        names = [""] * IMG_SET_SIZE
        for label, index in enumerate(order):
            names[index] = self._name(scenes[index], str(label))
        members = [names[index] for index in order]
        queries_made = [(0, group.modification)]
        for negative in self.rng.sample(range(2, IMG_SET_SIZE), queries - 1):
            queries_made.append((negative, (edit_between(scenes[negative], group.target),)))
        labels = iter(range(queries * distractors))
        for reference, modification in queries_made:
            self._query(names[reference], names[1], modification, members)
            for _ in range(distractors):
                scene = self._distractor(scenes[reference], [edit.kind for edit in modification])
                if scene is not None:
                    self._name(scene, f"d{next(labels)}")
        self.img_sets += 1


def plan_split(split: str, n_queries: int, seed: int, first_pairid: int, heldout: bool,
               distractors_per_query: int, advance: Callable[[int], object] = lambda n: None) -> SplitPlan:
    """Plan `n_queries` queries for `split`; deterministic in (seed, split). `advance(n)` reports n new queries."""
    rng = random.Random(f"cir-synth/{seed}/{split}")
    builder = _SplitBuilder(split, rng, first_pairid, heldout)
    while len(builder.plan.queries) < n_queries:
        remaining = n_queries - len(builder.plan.queries)
        compound = rng.random() < COMPOUND_FRACTION
        group = _draw_group(rng, builder.used, compound)
        if group is not None:
            queries = 1 if compound else min(QUERIES_PER_SINGLE_EDIT_GROUP, remaining)
            builder.add_group(group, queries, distractors_per_query)
            advance(queries)
    return builder.plan
