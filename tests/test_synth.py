"""The synthetic CIR benchmark: CIRR layout, unique targets, hard img_sets, held-out phrasings, determinism,
an oracle that scores 100 and a reference-only pixel baseline that cannot find the target."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from cir.cli import main as cli_main
from cir.data import load_benchmark
from cir.data.synth import SIZES, ensure_synthetic, generate, is_complete, load_metadata, oracle_run
from cir.data.synth import writer as writer_module
from cir.data.synth.contact_sheet import contact_sheet
from cir.data.synth.edits import (
    EDIT_KINDS, apply, edit_between, edits_at, modification_from_record, possible_kinds, random_edit,
)
from cir.data.synth.phrasing import refer, template_pattern
from cir.data.synth.plan import plan_split
from cir.data.synth.scene import CELLS, Scene, SceneObject, random_scene
from cir.errors import CirError, DatasetNotFoundError
from cir.eval import evaluate
from cir.types import Ranking, Run

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset, seed 0, rendered by a pool of two processes."""
    return generate(tmp_path_factory.mktemp("synth") / "seed0", seed=0, size="tiny", workers=2)


@pytest.fixture(scope="module")
def metadata(tiny_root: Path) -> dict:
    return load_metadata(tiny_root)


def read(root: Path, kind: str, split: str):
    name = f"captions/cap.synth.{split}.json" if kind == "captions" else f"image_splits/split.synth.{split}.json"
    return json.loads((root / name).read_text(encoding="utf-8"))


def split_scenes(metadata: dict, split: str) -> dict[str, Scene]:
    return {name: Scene.from_rows(rows) for name, rows in metadata["splits"][split]["scenes"].items()}


def type_signature(entry: dict) -> dict[str, object]:
    """Key -> type name, recursing into img_set, so two caption files can be compared field by field."""
    return {k: type_signature(v) if k == "img_set" else type(v).__name__ for k, v in entry.items()}


def test_files_follow_the_cirr_layout(tiny_root: Path, benchmarks_dir: Path) -> None:
    real = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text(encoding="utf-8"))
    real_split = json.loads((benchmarks_dir / "cirr/image_splits/split.rc2.val.json").read_text(encoding="utf-8"))
    for split in SPLITS:
        entries = read(tiny_root, "captions", split)
        assert {json.dumps(type_signature(e), sort_keys=True) for e in entries} == {
            json.dumps(type_signature(real[0]), sort_keys=True)
        }
        assert all(e["target_soft"] == {e["target_hard"]: 1.0} for e in entries)
        image_split = read(tiny_root, "split", split)
        assert all(isinstance(v, str) and v.startswith("./") for v in real_split.values())
        assert all(path == f"./{split}/{name}.png" for name, path in image_split.items())
        assert all((tiny_root / path).is_file() for path in image_split.values())
        assert len(list((tiny_root / split).iterdir())) == len(image_split)
    pairids = [e["pairid"] for split in SPLITS for e in read(tiny_root, "captions", split)]
    assert len(set(pairids)) == len(pairids)
    assert [len(read(tiny_root, "captions", s)) for s in SPLITS] == [SIZES["tiny"].queries[s] for s in SPLITS]


def test_every_query_has_exactly_one_target(tiny_root: Path, metadata: dict) -> None:
    for split in SPLITS:
        scenes = split_scenes(metadata, split)
        assert set(scenes) == set(read(tiny_root, "split", split))
        keys = [scene.key for scene in scenes.values()]
        assert len(set(keys)) == len(keys), "two gallery images share a scene description"
        for entry in read(tiny_root, "captions", split):
            query = metadata["splits"][split]["queries"][str(entry["pairid"])]
            reference, target = scenes[entry["reference"]], scenes[entry["target_hard"]]
            assert reference.key != target.key
            edited = reference
            for edit in modification_from_record(query["edit"]):
                edited = apply(edited, edit)
            assert edited == target
            assert [name for name, scene in scenes.items() if scene.key == edited.key] == [entry["target_hard"]]


def test_img_set_is_reference_target_and_four_scenes_one_edit_from_the_target(tiny_root: Path, metadata: dict) -> None:
    for split in SPLITS:
        scenes = split_scenes(metadata, split)
        for entry in read(tiny_root, "captions", split):
            members = entry["img_set"]["members"]
            assert len(members) == len(set(members)) == 6
            assert members[entry["img_set"]["reference_rank"]] == entry["reference"]
            assert members[entry["img_set"]["target_rank"]] == entry["target_hard"]
            target = scenes[entry["target_hard"]]
            others = [m for m in members if m not in (entry["reference"], entry["target_hard"])]
            assert len(others) == 4
            assert all(edit_between(target, scenes[m]) is not None for m in others)


def test_heldout_phrasings_appear_only_in_test(tiny_root: Path, metadata: dict) -> None:
    heldout = metadata["phrasings"]["heldout"]
    trained = metadata["phrasings"]["train"]
    heldout_templates = [t for ts in heldout["templates"].values() for t in ts] + heldout["connectives"]
    train_templates = [t for ts in trained["templates"].values() for t in ts] + trained["connectives"]
    captions = {s: [e["caption"] for e in read(tiny_root, "captions", s)] for s in SPLITS}
    for template in heldout_templates:
        pattern = template_pattern(template)
        assert not any(pattern.search(c) for s in ("train", "val") for c in captions[s]), template
        assert any(pattern.search(c) for c in captions["test"]), template
    for split, allowed in (("train", train_templates), ("val", train_templates), ("test", heldout_templates)):
        used = {t for q in metadata["splits"][split]["queries"].values() for t in q["templates"]}
        assert used <= set(allowed)
    assert heldout["splits"] == ["test"]


def test_references_pick_out_one_object() -> None:
    red_circle = SceneObject(0, 0, "circle", "red", "small")
    scene = Scene((red_circle, SceneObject(0, 1, "star", "red", "large"), SceneObject(1, 1, "circle", "blue", "large")))
    texts = {refer(red_circle, [scene], random.Random(seed)) for seed in range(300)}
    assert "the circle" not in texts
    assert not any(re.fullmatch(r"the red (object|shape|one|thing)", t) for t in texts)
    assert {"the red circle", "the small circle"} <= texts
    assert all("circle" in t or "top" in t for t in texts)


def test_edit_between_recovers_every_edit() -> None:
    rng = random.Random(3)
    for _ in range(300):
        scene = random_scene(rng)
        edit = random_edit(scene, rng.choice(possible_kinds(scene)), rng)
        edited = apply(scene, edit)
        assert edit_between(scene, edited) == edit
        assert edit_between(edited, scene) is not None  # edits are reversible by one edit
        assert edit_between(scene, scene) is None
        for alternative in edits_at(scene, rng.choice(CELLS)):
            try:
                assert edit_between(scene, apply(scene, alternative)) == alternative
            except ValueError:  # beyond the object-count limits
                assert alternative.kind in ("add", "remove")
    assert set(EDIT_KINDS) == {"add", "remove", "recolour", "reshape", "resize", "move"}


def test_scene_key_is_canonical() -> None:
    a = SceneObject(2, 2, "star", "blue", "large")
    b = SceneObject(0, 1, "heart", "pink", "small")
    assert Scene((a, b)).key == Scene((b, a)).key == "0,1:small-pink-heart|2,2:large-blue-star"
    assert Scene((a, b)).description() == "a small pink heart in the top centre; a large blue star in the bottom right"
    assert Scene.from_rows(Scene((a, b)).to_rows()) == Scene((a, b))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny_root: Path, tmp_path: Path) -> None:
    reference = tree_bytes(tiny_root)
    again = tree_bytes(generate(tmp_path / "again", seed=0, size="tiny", workers=1))
    assert again == reference  # one process or a pool of two: same bytes
    # Another seed, written over the first copy (a synthetic dataset is replaced as a whole).
    assert cli_main(["data", "synth", "--out", str(tmp_path / "again"), "--size", "tiny", "--seed", "1",
                     "--workers", "2"]) == 0
    other = tree_bytes(tmp_path / "again")
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary or retired copy left
    assert load_metadata(tmp_path / "again")["seed"] == 1
    assert other["captions/cap.synth.val.json"] != reference["captions/cap.synth.val.json"]
    assert sum(other.get(name) != data for name, data in reference.items() if name.endswith(".png")) > 0


def recall_at_1(run: Run, entries: list[dict]) -> float:
    """Local Recall@1 in percent (the run must already leave the reference out)."""
    return 100.0 * float(np.mean([run[str(e["pairid"])].ids[0] == e["target_hard"] for e in entries]))


def pixel_reference_run(root: Path, split: str) -> Run:
    """Reference-only baseline: the gallery ranked by pixel distance to the reference (reference excluded)."""
    from PIL import Image

    names = sorted(read(root, "split", split))
    pixels = np.stack([np.asarray(Image.open(root / split / f"{n}.png"), dtype=np.float32).ravel() for n in names])
    index = {n: i for i, n in enumerate(names)}
    rankings = []
    for entry in read(root, "captions", split):
        distance = ((pixels - pixels[index[entry["reference"]]]) ** 2).sum(axis=1)
        distance[index[entry["reference"]]] = np.inf
        order = np.argsort(distance, kind="stable")[:50]
        rankings.append(Ranking(str(entry["pairid"]), [names[i] for i in order], [-float(distance[i]) for i in order]))
    return Run(rankings, name="pixel-reference")


def test_oracle_scores_100_and_the_reference_alone_cannot_find_the_target(tiny_root: Path) -> None:
    for split in ("val", "test"):
        entries = read(tiny_root, "captions", split)
        oracle = oracle_run(tiny_root, split)
        baseline = pixel_reference_run(tiny_root, split)
        assert all(e["reference"] not in oracle[str(e["pairid"])].ids for e in entries)
        assert recall_at_1(oracle, entries) == 100.0
        assert recall_at_1(baseline, entries) < 10.0

        benchmark = load_benchmark("cirr", tiny_root, split)
        assert benchmark.release == "synth" and len(benchmark.queries) == len(entries)
        assert set(evaluate(benchmark, oracle).values()) == {100.0}
        scores = evaluate(benchmark, baseline)
        assert scores["recall@1"] == pytest.approx(recall_at_1(baseline, entries))
        assert scores["recall@1"] < 10.0


def test_a_perfect_reference_only_system_rarely_finds_the_target(tiny_root: Path, metadata: dict) -> None:
    """Even knowing every scene exactly, without the text the best bet is a random scene one edit from the reference:
    distractors and most img_set members are one edit away from it too."""
    for split in ("val", "test"):
        scenes = split_scenes(metadata, split)
        hit_at_1, subset_hit_at_1 = [], []
        for entry in read(tiny_root, "captions", split):
            reference = scenes[entry["reference"]]
            near = [n for n, s in scenes.items() if n != entry["reference"] and edit_between(reference, s) is not None]
            hit_at_1.append((entry["target_hard"] in near) / max(1, len(near)))
            others = [m for m in entry["img_set"]["members"] if m != entry["reference"]]
            near_in_set = [m for m in others if edit_between(reference, scenes[m]) is not None] or others
            subset_hit_at_1.append((entry["target_hard"] in near_in_set) / len(near_in_set))
        assert 100 * np.mean(hit_at_1) < 20
        assert 100 * np.mean(subset_hit_at_1) < 35


def test_default_size_meets_the_query_and_gallery_counts() -> None:
    spec = SIZES["default"]
    assert spec.queries["train"] >= 20_000 and spec.queries["val"] >= 2_000 and spec.queries["test"] >= 2_000
    val = plan_split("val", spec.queries["val"], seed=0, first_pairid=0, heldout=False,
                     distractors_per_query=spec.eval_distractors)
    assert len(val.queries) == spec.queries["val"]
    assert len(val.scenes) >= 5_000


def test_ensure_synthetic_reuses_a_complete_dataset_and_repairs_a_damaged_split(
    tiny_root: Path, tmp_path: Path, monkeypatch
) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    reference = tree_bytes(root)
    monkeypatch.setattr(writer_module, "generate", lambda *a, **k: pytest.fail("a complete dataset was regenerated"))
    assert is_complete(root, size="tiny")
    assert ensure_synthetic(root, size="tiny") == root
    assert not is_complete(root, size="small") and not is_complete(root, size="tiny", seed=1)

    sorted((root / "val").iterdir())[0].unlink()
    assert not is_complete(root, size="tiny") and is_complete(root, size="tiny", splits=("train", "test"))
    rendered = []
    real_render = writer_module._render_all
    monkeypatch.setattr(writer_module, "_render_all", lambda r, plans, *a: rendered.extend(p.split for p in plans)
                        or real_render(r, plans, *a))
    ensure_synthetic(root, size="tiny", seed=0, workers=1)
    assert rendered == ["val"]  # only the damaged split is written again
    assert tree_bytes(root) == reference
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging folder left beside it


def test_splits_written_one_at_a_time_are_the_files_of_a_full_run(tiny_root: Path, tmp_path: Path) -> None:
    root = generate(tmp_path / "parts", size="tiny", workers=1, splits=("val",))
    assert is_complete(root, size="tiny", splits=("val",)) and not is_complete(root, size="tiny")
    assert sorted(load_metadata(root)["splits"]) == ["val"]
    assert not (root / "train").exists()
    partial = tree_bytes(root)
    full = tree_bytes(tiny_root)
    assert all(full[name] == data for name, data in partial.items() if name != "metadata.json")

    with pytest.raises(DatasetNotFoundError, match=r"holds the synthetic splits val but not 'train'.*cir data synth"):
        load_benchmark("cirr", root, "train")
    with pytest.raises(DatasetNotFoundError, match="not 'test'"):
        oracle_run(root, "test")
    with pytest.raises(DatasetNotFoundError, match="not 'test'.*cir data synth"):
        contact_sheet(root, split="test", out=tmp_path / "sheet.png")

    ensure_synthetic(root, size="tiny", splits=("val", "test"), workers=2)
    assert sorted(load_metadata(root)["splits"]) == ["test", "val"]
    ensure_synthetic(root, size="tiny", workers=1)
    assert tree_bytes(root) == full


def test_unknown_splits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CirError, match="unknown synthetic splits.*dev"):
        generate(tmp_path / "x", size="tiny", splits=("dev",))
    assert not (tmp_path / "x").exists()


def test_an_interrupted_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "_render_all", fail)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "data", size="tiny", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.png").write_bytes(b"not ours")
    with pytest.raises(CirError, match="holds no synthetic dataset"):
        generate(tmp_path / "mine", size="tiny", workers=1)
    assert (tmp_path / "mine" / "photo.png").read_bytes() == b"not ours"
    with pytest.raises(CirError, match="metadata not found"):
        load_metadata(tmp_path / "mine")


def test_cli_show_draws_a_contact_sheet(tiny_root: Path, tmp_path: Path) -> None:
    from PIL import Image

    from cir.data.synth.contact_sheet import PAD, THUMB

    out = tmp_path / "sheet.png"
    assert cli_main(["data", "show", str(tiny_root), "--split", "test", "--n", "4", "--out", str(out)]) == 0
    with Image.open(out) as sheet:
        assert sheet.height == 4 * (THUMB + 2 * PAD)
        colours = np.unique(np.asarray(sheet.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 100  # images and text were drawn
    assert cli_main(["data", "show", str(tmp_path / "missing")]) == 2
