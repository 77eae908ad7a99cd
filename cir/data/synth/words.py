"""The words a synthetic scene and a synthetic edit are made of, from metadata.json: the ground truth that a sparse
stage one's terms are held to (`cir.eval.term_metrics`) and that its training may supervise them with.

A scene's words are its objects' shapes, colours and sizes ("small red circle", ...); positions are left out: a
picture shows where an object is, but "top" or "left" is not a thing in it. An edit's words are what it brings
into the target: the new colour of a recolour, the new shape of a reshape, the new size of a resize, the shape of an
added object. A remove or a move brings no new word (the target shows nothing that the reference did not), so it
has none; a compound has the words of both its parts.
"""

from __future__ import annotations

from pathlib import Path

from .edits import ATTRIBUTE_EDITS, modification_from_record
from .layout import split_metadata


SCENE_ATTRIBUTES = ("shape", "colour", "size")


def scene_words(root: str | Path, split: str, attributes: tuple[str, ...] = SCENE_ATTRIBUTES) -> dict[str, list[str]]:
    """Every image of a split -> its scene's distinct words of `attributes` (all three: shapes, colours, sizes)."""
    return _scene_words(split_metadata(Path(root), split)["scenes"], attributes)


def _scene_words(scenes: dict, attributes: tuple[str, ...]) -> dict[str, list[str]]:
    columns = [2 + SCENE_ATTRIBUTES.index(a) for a in attributes]  # a scene row is [row, col, shape, colour, size]
    return {image_id: list(dict.fromkeys(obj[c] for obj in objects for c in columns)) for image_id, objects in scenes.items()}


def edit_words(root: str | Path, split: str) -> dict[str, list[str]]:
    """Every query of a split (by its id) -> the words its edit brings into the target (empty for a remove or move)."""
    return _edit_words(split_metadata(Path(root), split)["queries"])


def _edit_words(queries: dict) -> dict[str, list[str]]:
    out = {}
    for query_id, entry in queries.items():
        words = []
        for edit in modification_from_record(entry["edit"]):
            if edit.kind in ATTRIBUTE_EDITS:
                words.append(edit.value)
            elif edit.kind == "add":
                words.append(edit.value.shape)
        out[query_id] = list(dict.fromkeys(words))
    return out


def term_truth(root: str | Path, split: str) -> dict[str, dict[str, list[str]]]:
    """What `cir.eval.term_metrics.term_metrics` holds a split's sparse vectors to (its `words_of_image`,
    `recall_words` and `edit_words` arguments), from one read of the metadata."""
    meta = split_metadata(Path(root), split)
    return {"words_of_image": _scene_words(meta["scenes"], SCENE_ATTRIBUTES),
            "recall_words": _scene_words(meta["scenes"], ("shape", "colour")),
            "edit_words": _edit_words(meta["queries"])}
