"""The stage contract: abstract stages, one constructor convention, composition with any number of rerankers, the
config's free params passed through unchanged, and one way from a config (or a pretrained tag) to a Pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cir import Pipeline, Query, Ranking, Reranker, Retriever, Run, create_model
from cir.cache import FeatureCache
from cir.config import Config
from cir.data import load_benchmark
from cir.errors import CirError, FormatError
from cir.stages import DenseRetriever, DualEncoderReranker


class Fixed(Retriever):
    """Ranks the gallery in its own order: a stage one with no encoder."""

    name = "fixed"

    def __init__(self, model=None, cache=None) -> None:
        self.ids: list[str] = []

    def index(self, gallery) -> None:
        self.ids = list(gallery.ids)

    def search(self, queries, k):
        return Run(Ranking(q.id, self.ids[:k], [float(-i) for i in range(len(self.ids[:k]))]) for q in queries)


class Reverse(Reranker):
    """Reverses the head it is given, and returns only that head."""

    name = "reverse"

    def __init__(self, model=None, cache=None) -> None:
        self.calls: list[int | None] = []

    def rerank(self, queries, run, k=None):
        self.calls.append(k)
        heads = {q.id: run[q.id].ids[:k][::-1] for q in queries}
        return Run(Ranking(qid, ids, [float(-i) for i in range(len(ids))]) for qid, ids in heads.items())


@pytest.fixture(scope="module")
def val(synth_tiny: Path):
    return load_benchmark("cirr", synth_tiny, "val")


def test_stages_are_abstract() -> None:
    with pytest.raises(TypeError):
        Retriever()
    with pytest.raises(TypeError):
        Reranker()


def test_any_number_of_rerankers_each_with_its_own_cut_off(val) -> None:
    a, b = Reverse(), Reverse()
    pipe = Fixed() % 30 >> a % 10 >> b
    assert repr(pipe) == "Pipeline(fixed % 30 >> reverse % 10 >> reverse)"
    assert (Fixed() % 50 >> a) >> b is not None and len(((Fixed() % 50 >> a) >> b).rerankers) == 2  # none dropped
    pipe.exclude_reference = False
    pipe.index(val.gallery)
    query = val.queries[0]
    runs = pipe.run([query], depth=len(val.gallery))
    assert list(runs) == ["stage1", "stage2", "stage3"] and a.calls == [30] and b.calls == [10]
    ids = val.gallery.ids
    second = ids[:30][::-1] + ids[30:]  # a reversed stage one's 30, kept the tail below
    assert runs["stage2"][query.id].ids == second
    assert runs["stage3"][query.id].ids == second[:10][::-1] + second[10:]
    assert runs["stage3"][query.id].scores == sorted(runs["stage3"][query.id].scores, reverse=True)
    assert pipe.images_encoded == 0  # stages that encode nothing count as none


@pytest.mark.parametrize("nonsense", [
    lambda: Fixed() >> Fixed(),
    lambda: Reverse() >> Reverse(),
    lambda: (Reverse() % 5) >> Reverse(),
    lambda: (Fixed() % 5) >> (Fixed() % 5),
    lambda: Fixed() >> 3,
    lambda: Fixed() % 2.5,
    lambda: Fixed() % "10",
])
def test_nonsense_compositions_are_type_errors_with_a_message(nonsense) -> None:
    with pytest.raises(TypeError, match="."):
        nonsense()


def test_a_cut_off_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Fixed() % 0


def test_from_config_passes_the_stage_sections_through_unchanged(tiny_model, tmp_path) -> None:
    cfg = Config.from_dict({
        "stage_one": {"kind": "dense", "k": 40, "index": "hnsw", "index_params": {"M": 8}, "batch_size": 16},
        "stage_two": [{"kind": "dual-encoder", "k": 10, "stage1_weight": 3.0}, {"kind": "dual-encoder", "batch_size": 4}],
        "cache_dir": str(tmp_path),
    })
    pipe = Pipeline.from_config(cfg, model=tiny_model)
    assert repr(pipe) == "Pipeline(dense % 40 >> dual-encoder % 10 >> dual-encoder)"
    assert (pipe.retriever.index_kind, pipe.retriever.index_params, pipe.retriever.batch_size) == ("hnsw", {"M": 8}, 16)
    first, second = (r for r, _ in pipe.rerankers)
    assert first.stage1_weight == 3.0 and second.encoder.batch_size == 4
    assert Pipeline.from_config({**cfg.to_dict(), "stage_two": None}, model=tiny_model).rerankers == []


@pytest.mark.parametrize("section, message", [
    ({"stage_one": {"kind": "densee"}}, r"stage_one.kind: unknown stage-one retriever 'densee' \(known: dense, "),
    ({"stage_two": {"kind": "dual-encoder", "stage_1_weight": 2}}, r"stage_two: dual-encoder: unknown setting 'stage_1_weight'"),
    ({"stage_two": [{"kind": "dual-encoder"}, {"kind": "nope"}]}, r"stage_two\[1\].kind: unknown stage-two reranker 'nope'"),
    ({"stage_one": {"kind": "dense", "k": 0}}, r"stage_one.k must be a whole number >= 1"),
    ({"stage_two": "dual-encoder"}, r"stage_two must be a mapping, a list of mappings, or null"),
])
def test_config_mistakes_are_one_line_errors_naming_the_key(tiny_model, section, message) -> None:
    with pytest.raises((CirError, FormatError), match=message):
        Pipeline.from_config(Config.from_dict(section, source="my.yaml"), model=tiny_model)


def test_a_stage_one_checkpoint_without_stage_two_is_a_clear_error(tmp_path) -> None:
    from cir.models import save_checkpoint

    stage1 = save_checkpoint(create_model("blip-tiny"), tmp_path / "s1.safetensors", parts=("stage1",))
    cfg = Config.from_dict({"model": {"stage1": str(stage1)}}, source="x.yaml")
    with pytest.raises(CirError, match=r"x.yaml: stage_two: model 'blip-tiny' has no stage-two weights: give model.stage2"):
        Pipeline.from_config(cfg)


def test_from_pretrained_is_from_config_of_the_tag(tmp_path) -> None:
    pipe = Pipeline.from_pretrained("blip-tiny", pretrained="synth", cache_dir=tmp_path)
    assert repr(pipe) == "Pipeline(dense % 50 >> dual-encoder)"
    assert pipe.reranker.stage1_weight == 20.0  # the tag's calibrated weight, as `cir eval` on synth-tiny.yaml uses
    from_yaml = Pipeline.from_config(Path(__file__).resolve().parents[1] / "configs" / "synth-tiny.yaml")
    assert from_yaml.reranker.stage1_weight == 20.0 and from_yaml.retriever.model.weights_id == pipe.retriever.model.weights_id
    model = create_model("blip-tiny", pretrained="synth")  # composed by hand: the same stages, the same weight
    by_hand = DenseRetriever.from_config(model, None) % 50 >> DualEncoderReranker.from_config(model, None)
    assert by_hand.reranker.stage1_weight == 20.0 and model.stage2 is not None
    with pytest.raises(CirError, match=r"unknown pretrained tag 'synht' for model 'blip-tiny' \(its tags: synth\)"):
        create_model("blip-tiny", pretrained="synht")


def test_a_reference_given_as_a_path_to_a_gallery_image_is_excluded_like_its_id(tiny_model, val, tmp_path) -> None:
    pipe = DenseRetriever(tiny_model, FeatureCache(tmp_path)) % 10 >> DualEncoderReranker(tiny_model, FeatureCache(tmp_path))
    pipe.index(val.gallery)
    query = val.queries[0]
    copy = tmp_path / "elsewhere.png"
    shutil.copyfile(val.gallery.path(query.reference), copy)
    by_id = [r.image_id for r in pipe.search(query.reference, query.text, k=len(val.gallery))]
    by_path = [r.image_id for r in pipe.search(str(copy), query.text, k=len(val.gallery))]
    assert query.reference not in by_id and query.reference not in by_path
    runs = pipe.run([Query("q", str(copy), query.text)], depth=len(val.gallery))
    assert query.reference not in runs["stage1"]["q"].ids and len(runs["stage1"]["q"]) == len(val.gallery) - 1
