"""Benchmark readers on the real annotation files, plus small broken copies for the error paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cir.data import load_benchmark, load_fashioniq_categories
from cir.data.fashioniq import join_captions
from cir.errors import CirError, DatasetNotFoundError, FormatError


def test_cirr_counts(cirr_val, cirr_test1):
    assert (len(cirr_val.queries), len(cirr_val.gallery)) == (4181, 2297)
    assert (len(cirr_test1.queries), len(cirr_test1.gallery)) == (4148, 2315)
    assert cirr_val.release == cirr_test1.release == "rc2"  # detected from the caption file name
    assert cirr_val.exclude_reference and cirr_val.top_k == 50
    assert "2,297" in cirr_val.protocol and "reference excluded" in cirr_val.protocol


def test_cirr_entries(cirr_val, cirr_test1, benchmarks_dir):
    raw = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())[0]
    query = cirr_val.queries[0]
    assert (query.id, query.reference, query.text) == (str(raw["pairid"]), raw["reference"], raw["caption"])
    assert cirr_val.targets[query.id] == [raw["target_hard"]]
    members = cirr_val.subsets[query.id]
    assert len(members) == 5 and query.reference not in members
    assert set(members) == set(raw["img_set"]["members"]) - {raw["reference"]}
    assert all(len(cirr_val.subsets[q.id]) == 5 for q in cirr_val.queries)
    assert cirr_test1.targets is None and cirr_test1.subsets is not None
    assert cirr_val.metric_names == [
        "recall@1", "recall@5", "recall@10", "recall@50",
        "recall_subset@1", "recall_subset@2", "recall_subset@3", "avg",
    ]


def test_cirr_image_paths(benchmarks_dir, tmp_path):
    root = benchmarks_dir / "cirr"
    bench = load_benchmark("cirr", root, "val")
    assert bench.gallery.path("dev-244-0-img0") == root / "dev" / "dev-244-0-img0.png"
    moved = load_benchmark("cirr", root, "val", image_root=tmp_path)
    assert moved.gallery.path("dev-244-0-img0") == tmp_path / "dev" / "dev-244-0-img0.png"


def test_cirr_uses_img_raw_when_present(benchmarks_dir, tmp_path):
    root = copy_tree(benchmarks_dir / "cirr", tmp_path, ["captions/cap.rc2.val.json", "image_splits/split.rc2.val.json"])
    (root / "img_raw").mkdir()
    bench = load_benchmark("cirr", root, "val")
    assert bench.gallery.path("dev-244-0-img0") == root / "img_raw" / "dev" / "dev-244-0-img0.png"


def test_cirr_synthetic_release_with_targets_on_test(tmp_path):
    """A CIRR-layout folder of another release, with targets on its test split and no img_set."""
    root = tmp_path / "synth"
    write(root / "image_splits/split.synth.test.json", {"a": "./test/a.png", "b": "./test/b.png", "c": "./test/c.png"})
    write(root / "captions/cap.synth.test.json", [
        {"pairid": 7, "reference": "a", "target_hard": "b", "caption": "make it b"},
        {"pairid": 8, "reference": "b", "target_hard": "c", "caption": "make it c"},
    ])
    bench = load_benchmark("cirr", root, "test")
    assert (bench.name, bench.release, bench.split) == ("cirr", "synth", "test")
    assert bench.targets == {"7": ["b"], "8": ["c"]}
    assert bench.subsets is None and bench.metric_names == ["recall@1", "recall@5", "recall@10", "recall@50"]


def test_cirr_several_releases_need_a_choice(tmp_path):
    root = tmp_path / "cirr"
    for release in ("rc1", "rc2"):
        write(root / f"image_splits/split.{release}.val.json", {"a": "./a.png"})
        write(root / f"captions/cap.{release}.val.json", [{"pairid": 1, "reference": "a", "caption": "x"}])
    with pytest.raises(CirError, match="rc1, rc2"):
        load_benchmark("cirr", root, "val")
    assert load_benchmark("cirr", root, "val", release="rc1").release == "rc1"


def test_fashioniq_counts(fashioniq_val):
    counts = {c: (len(b.queries), len(b.gallery)) for c, b in fashioniq_val.items()}
    assert counts == {"dress": (2017, 3817), "shirt": (2038, 6346), "toptee": (1961, 5373)}
    dress = fashioniq_val["dress"]
    assert not dress.exclude_reference and dress.top_k == 100 and dress.subsets is None
    assert dress.headline_of == ("recall@10", "recall@50")


def test_fashioniq_entries(fashioniq_val, benchmarks_dir):
    raw = json.loads((benchmarks_dir / "fashioniq/captions/cap.shirt.val.json").read_text())
    bench = fashioniq_val["shirt"]
    for index in (0, len(raw) - 1):
        query = bench.queries[index]
        assert query.id == str(index)  # the entry's position in its category's caption file
        assert query.reference == raw[index]["candidate"]
        assert bench.targets[query.id] == [raw[index]["target"]]
    assert bench.gallery.path("B00CZ7QJUG") == benchmarks_dir / "fashioniq/images/B00CZ7QJUG.png"


def test_fashioniq_caption_rule():
    assert join_captions("Is Shiny and SILVER.", " fit and flare?") == "Is shiny and silver and fit and flare"
    assert join_captions(" yello and more flowing", "short and black, ") == "Yello and more flowing and short and black"


def test_fashioniq_test_split_has_no_targets(benchmarks_dir):
    bench = load_benchmark("fashioniq", benchmarks_dir / "fashioniq", "test", category="dress")
    assert bench.targets is None and len(bench.queries) == 2024


def test_fashioniq_finds_images_by_stem(benchmarks_dir, tmp_path):
    (tmp_path / "B0084Y8XIU.jpg").write_bytes(b"")
    bench = load_benchmark("fashioniq", benchmarks_dir / "fashioniq", "val", category="dress", image_root=tmp_path)
    assert bench.gallery.path("B0084Y8XIU") == tmp_path / "B0084Y8XIU.jpg"
    assert bench.gallery.path("B009PMCJLW") == tmp_path / "B009PMCJLW.png"


def test_fashioniq_needs_a_category(benchmarks_dir):
    with pytest.raises(CirError, match="load_fashioniq_categories"):
        load_benchmark("fashioniq", benchmarks_dir / "fashioniq", "val")
    assert list(load_fashioniq_categories(benchmarks_dir / "fashioniq", "val")) == ["dress", "shirt", "toptee"]


def test_circo_counts(circo_val, circo_test):
    assert len(circo_val.queries) == 220 and len(circo_test.queries) == 800
    assert circo_test.targets is None
    assert circo_val.metric_names == ["map@5", "map@10", "map@25", "map@50"]
    assert not circo_val.exclude_reference and circo_val.top_k == 50
    assert "reference kept, as the official evaluation code" in circo_val.protocol


def test_reference_rule_is_the_official_one_unless_asked(benchmarks_dir):
    """None follows each benchmark's own rule; an explicit departure is captioned as not comparable."""
    excluded = load_benchmark("circo", benchmarks_dir / "circo", "val", exclude_reference=True)
    assert excluded.exclude_reference
    assert "reference excluded (not the official protocol: figures not comparable)" in excluded.protocol
    kept = load_benchmark("circo", benchmarks_dir / "circo", "val", exclude_reference=False)
    assert not kept.exclude_reference and "as the official evaluation code" in kept.protocol
    cirr_kept = load_benchmark("cirr", benchmarks_dir / "cirr", "val", exclude_reference=False)
    assert not cirr_kept.exclude_reference and "reference kept (not the official protocol" in cirr_kept.protocol
    dress = load_benchmark("fashioniq", benchmarks_dir / "fashioniq", "val", category="dress", exclude_reference=True)
    assert dress.exclude_reference and "reference excluded (not the official protocol" in dress.protocol


def test_circo_entries_and_unknown_gallery(circo_val, benchmarks_dir):
    raw = json.loads((benchmarks_dir / "circo/annotations/val.json").read_text())[0]
    query = circo_val.queries[0]
    assert (query.id, query.reference, query.text) == (str(raw["id"]), str(raw["reference_img_id"]), raw["relative_caption"])
    assert circo_val.targets[query.id] == [str(i) for i in raw["gt_img_ids"]]
    assert len(circo_val.gallery) == 0 and "not loaded" in circo_val.protocol
    assert circo_val.is_image_id("271520")
    assert not circo_val.is_image_id("000000271520") and not circo_val.is_image_id("dev-1-0-img0")


def test_circo_gallery_from_image_info(benchmarks_dir, tmp_path):
    root = copy_tree(benchmarks_dir / "circo", tmp_path, ["annotations/val.json"])
    info = {"images": [{"id": 271520, "file_name": "000000271520.jpg"}, {"id": 355099, "file_name": "000000355099.jpg"}]}
    write(root / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json", info)
    bench = load_benchmark("circo", root, "val")
    assert bench.gallery.ids == ["271520", "355099"]
    assert bench.gallery.path("271520") == root / "COCO2017_unlabeled/unlabeled2017/000000271520.jpg"
    assert not bench.is_image_id("528417") and "2 images" in bench.protocol


def test_missing_folder_names_path_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'nope'}.*Cuberick-Orion/CIRR"):
        load_benchmark("cirr", tmp_path / "nope", "val")
    with pytest.raises(DatasetNotFoundError, match="no FashionIQ folder given.*XiaoxiaoGuo/fashion-iq"):
        load_benchmark("fashioniq", None, "val", category="dress")
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'annotations' / 'val.json'}.*miccunifi/CIRCO"):
        load_benchmark("circo", tmp_path, "val")


def test_malformed_entries_name_file_and_entry(benchmarks_dir, tmp_path):
    root = copy_tree(benchmarks_dir / "cirr", tmp_path, ["captions/cap.rc2.val.json", "image_splits/split.rc2.val.json"])
    captions = root / "captions/cap.rc2.val.json"
    entries = json.loads(captions.read_text())
    del entries[3]["caption"]
    write(captions, entries)
    with pytest.raises(FormatError, match=rf"{captions}: entry 3 \(pairid {entries[3]['pairid']}\): missing field 'caption'"):
        load_benchmark("cirr", root, "val")
    entries[3]["caption"] = "x"
    entries[5]["reference"] = "not-an-image"
    write(captions, entries)
    with pytest.raises(FormatError, match=r"entry 5 .*'not-an-image' is not in the split's image_splits file"):
        load_benchmark("cirr", root, "val")


def test_malformed_fashioniq_entry(benchmarks_dir, tmp_path):
    root = copy_tree(
        benchmarks_dir / "fashioniq", tmp_path, ["captions/cap.dress.val.json", "image_splits/split.dress.val.json"]
    )
    captions = root / "captions/cap.dress.val.json"
    entries = json.loads(captions.read_text())
    entries[9]["captions"] = ["only one"]
    write(captions, entries)
    with pytest.raises(FormatError, match=rf"{captions}: entry 9: expected 2 captions"):
        load_benchmark("fashioniq", root, "val", category="dress")


def test_unknown_benchmark():
    with pytest.raises(CirError, match="unknown benchmark 'coco'"):
        load_benchmark("coco", "/tmp", "val")


def copy_tree(source: Path, tmp_path: Path, files: list[str]) -> Path:
    """A copy of some of a benchmark's files, to break one without touching the shared folder."""
    root = tmp_path / source.name
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, root / name)
    return root


def write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
