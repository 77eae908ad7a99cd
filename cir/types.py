"""The words used everywhere: Query, Gallery, Ranking, Run."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from .errors import DatasetNotFoundError, FormatError, UnknownIdError
from .io import keep_repeated_keys, read_json, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Query:
    """A composed query: a reference image (a gallery id or an image path) and a modification text."""

    id: str
    reference: str
    text: str


@dataclass
class Ranking:
    """One query's candidates, best first, with their scores (higher is better)."""

    query_id: str
    ids: list[str]
    scores: list[float]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.scores):
            raise ValueError(f"query {self.query_id}: {len(self.ids)} ids but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.ids)

    def top(self, k: int) -> "Ranking":
        return Ranking(self.query_id, self.ids[:k], self.scores[:k])


class Run(dict):
    """Query id -> Ranking. Round-trips through the JSON run format `{"qid": [["image id", score], ...]}`.

    `query_states` is what the stage that produced the run knew of its queries (a stage-one retriever's encodings,
    which a reranker may start from); it is never written to a file.
    """

    def __init__(
        self, rankings: Iterable[Ranking] | Mapping[str, Ranking] = (), name: str = "run", query_states: object = None
    ) -> None:
        super().__init__()
        self.name = name
        self.query_states = query_states
        items = rankings.values() if isinstance(rankings, Mapping) else rankings
        for ranking in items:
            self[ranking.query_id] = ranking

    def top(self, k: int) -> "Run":
        return Run((r.top(k) for r in self.values()), name=self.name, query_states=self.query_states)

    def to_json(self) -> dict[str, list[list]]:
        return {qid: [[i, float(s)] for i, s in zip(r.ids, r.scores)] for qid, r in self.items()}

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_json(), indent=None)

    @classmethod
    def from_json(cls, data: object, source: str = "run", name: str | None = None) -> "Run":
        """Parse the run format. Also accepts plain id lists (`{"qid": ["id", ...]}`, scores = descending ranks).

        Image ids may be JSON integers where a benchmark's ids are (CIRCO's COCO ids, as in its official example
        submission); they are stored as their decimal strings. A query given twice (a repeated key, seen when `data`
        was read by `Run.load`) and a NaN or infinite score are FormatErrors naming `source`, the query and the entry.
        """
        if not isinstance(data, dict):
            raise FormatError(f"{source}: a run file holds a JSON object of query id -> ranked list")
        repeated = getattr(data, "repeated", None)
        if repeated:
            raise FormatError(f"{source}: query {repeated[0]} appears more than once (a repeated key in the JSON object)")
        run = cls(name=name or Path(source).stem)
        for qid, entries in data.items():
            if not isinstance(entries, list):
                raise FormatError(f"{source}: query {qid}: expected a list of [image id, score] pairs")
            ids: list[str] = []
            scores: list[float] = []
            for rank, entry in enumerate(entries):
                where = f"{source}: query {qid}, entry {rank}"
                if _is_image_id(entry):
                    ids.append(str(entry))
                    scores.append(float(len(entries) - rank))
                elif (
                    isinstance(entry, (list, tuple))
                    and len(entry) == 2
                    and _is_image_id(entry[0])
                    and isinstance(entry[1], (int, float))
                ):
                    ids.append(str(entry[0]))
                    scores.append(_finite_score(entry[1], where))
                else:
                    raise FormatError(f"{where}: expected [\"image id\", score] or \"image id\", got {entry!r:.80}")
            run[str(qid)] = Ranking(str(qid), ids, scores)
        return run

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Run":
        """Read a run file (see `from_json`); a query named twice in the file is an error, not a silent overwrite."""
        return cls.from_json(read_json(path, "run file", object_pairs_hook=keep_repeated_keys), source=str(path))


def _is_image_id(value: object) -> bool:
    """A run's image id: a string, or a JSON integer (never a bool) standing for its decimal string."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _finite_score(value: float, where: str) -> float:
    """`value` as a float, or a FormatError naming `where` if it is NaN or infinite (Python's json reads both)."""
    try:
        score = float(value)
    except OverflowError:
        score = math.inf
    if not math.isfinite(score):
        raise FormatError(f"{where}: score {value!r:.40} is not a finite number")
    return score


def open_image(path: str | os.PathLike):
    """Open an image by its content (some CIRR `.png` files are JPEG inside), converted to RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"image not found: {path}") from exc
    except UnidentifiedImageError as exc:
        raise FormatError(f"{path}: not a readable image") from exc


@dataclass
class Gallery:
    """Image ids and where each image lives; images are loaded on demand."""

    ids: list[str]
    paths: dict[str, Path] = field(default_factory=dict)
    name: str = "gallery"

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.paths if self.paths else image_id in set(self.ids)

    def path(self, image_id: str) -> Path:
        try:
            return self.paths[image_id]
        except KeyError:
            raise UnknownIdError(f"image id {image_id!r} is not in gallery {self.name!r}") from None

    def load(self, image_id: str):
        return open_image(self.path(image_id))

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], name: str = "gallery") -> "Gallery":
        """Ids are file stems; two files with the same stem are an error."""
        mapping: dict[str, Path] = {}
        for p in map(Path, paths):
            if p.stem in mapping:
                raise FormatError(f"two images share the id {p.stem!r}: {mapping[p.stem]} and {p}")
            mapping[p.stem] = p
        return cls(list(mapping), mapping, name)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, name: str | None = None) -> "Gallery":
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetNotFoundError(f"image folder not found: {folder}")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
        return cls.from_paths(paths, name=name or folder.name)
