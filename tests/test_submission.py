"""Test-server files: the official examples pass, corrupted copies fail naming the query, built files obey the rules."""

from __future__ import annotations

import copy
import json

import pytest

from cir.data import load_benchmark
from cir.errors import CirError, FormatError
from cir.eval import submission
from cir.eval.submission import build_submission, check_submission, check_submission_file, write_submission
from cir.types import Ranking, Run


@pytest.fixture(scope="module")
def cirr_demo(benchmarks_dir) -> dict[str, dict]:
    folder = benchmarks_dir / "cirr/demo_files"
    return {m: json.loads((folder / f"test1_pred_ranks_{m}.json").read_text()) for m in ("recall", "recall_subset")}


def test_official_cirr_demo_files_pass(cirr_test1, benchmarks_dir):
    folder = benchmarks_dir / "cirr/demo_files"
    assert check_submission_file(cirr_test1, folder / "test1_pred_ranks_recall.json") == "recall"
    assert check_submission_file(cirr_test1, folder / "test1_pred_ranks_recall_subset.json") == "recall_subset"


def test_official_circo_examples_pass(circo_val, circo_test, benchmarks_dir):
    folder = benchmarks_dir / "circo/submission_examples"
    assert check_submission_file(circo_val, folder / "submission_val.json") == "rankings"
    assert check_submission_file(circo_test, folder / "submission_test.json") == "rankings"


def corrupt_cirr(cirr_test1, demo: dict, how: str) -> tuple[dict, str]:
    """A corrupted copy of a demo file and the pairid whose entry was broken."""
    content = copy.deepcopy(demo)
    query = cirr_test1.queries[17]
    ranking = content[query.id]
    if how == "reference":
        ranking[-1] = query.reference
    elif how == "51 ids":
        ranking.append(next(i for i in cirr_test1.gallery.ids if i not in ranking and i != query.reference))
    elif how == "missing":
        del content[query.id]
    elif how == "duplicate":
        ranking[1] = ranking[0]
    elif how == "outside subset":
        ranking[2] = next(i for i in cirr_test1.gallery.ids if i not in cirr_test1.subsets[query.id] + [query.reference])
    return content, query.id


@pytest.mark.parametrize(
    "metric, how, message",
    [
        ("recall", "reference", "lists the reference image"),
        ("recall", "51 ids", "expected exactly 50 image ids, got 51"),
        ("recall", "missing", "is missing"),
        ("recall", "duplicate", "listed more than once"),
        ("recall_subset", "reference", "lists the reference image"),
        ("recall_subset", "outside subset", "not among the query's other img_set members"),
        ("recall_subset", "missing", "is missing"),
    ],
)
def test_corrupted_cirr_files_fail_naming_the_pairid(cirr_test1, cirr_demo, tmp_path, metric, how, message):
    content, pairid = corrupt_cirr(cirr_test1, cirr_demo[metric], how)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(content))
    with pytest.raises(FormatError, match=f"{path}: pairid {pairid}.*{message}"):
        check_submission_file(cirr_test1, path)


def test_cirr_header_is_checked(cirr_test1, cirr_demo):
    with pytest.raises(FormatError, match="\"version\" should be 'rc2', got 'rc1'"):
        check_submission(cirr_test1, {**cirr_demo["recall"], "version": "rc1"}, "f.json")
    with pytest.raises(FormatError, match="\"metric\" should be one of recall, recall_subset"):
        check_submission(cirr_test1, {**cirr_demo["recall"], "metric": "map"}, "f.json")
    with pytest.raises(FormatError, match="pairid 1 is not a query of CIRR rc2 test1"):
        check_submission(cirr_test1, {**cirr_demo["recall"], "1": []}, "f.json")


def test_corrupted_circo_files_fail_naming_the_query(circo_test, benchmarks_dir):
    example = json.loads((benchmarks_dir / "circo/submission_examples/submission_test.json").read_text())
    short = {**example, "12": example["12"][:49]}
    with pytest.raises(FormatError, match="f.json: query 12: expected exactly 50 image ids, got 49"):
        check_submission(circo_test, short, "f.json")
    strings = {**example, "3": [str(i) for i in example["3"]]}
    with pytest.raises(FormatError, match="query 3: image ids should be ints"):
        check_submission(circo_test, strings, "f.json")
    missing = {k: v for k, v in example.items() if k != "799"}
    with pytest.raises(FormatError, match="query 799 of CIRCO test is missing"):
        check_submission(circo_test, missing, "f.json")


def deep_run(benchmark) -> Run:
    """Every query ranks the last 60 gallery images in reverse gallery order, then its subset members not yet ranked."""
    head = benchmark.gallery.ids[::-1][:60]
    rankings = {q.id: head + [m for m in benchmark.subsets[q.id] if m not in head] for q in benchmark.queries}
    return Run((Ranking(qid, ids, [float(-r) for r in range(len(ids))]) for qid, ids in rankings.items()), name="deep")


def test_cirr_files_built_from_a_run(cirr_test1, tmp_path):
    run = deep_run(cirr_test1)
    paths = write_submission(cirr_test1, run, tmp_path)
    assert [p.name for p in paths] == ["cirr_test1_pred_ranks_recall.json", "cirr_test1_pred_ranks_recall_subset.json"]
    assert [check_submission_file(cirr_test1, p) for p in paths] == ["recall", "recall_subset"]
    recall, subset = (json.loads(p.read_text()) for p in paths)
    assert recall["version"] == subset["version"] == "rc2"
    for query in cirr_test1.queries:
        ranked = run[query.id].ids
        assert recall[query.id] == [i for i in ranked if i != query.reference][:50]
        assert subset[query.id] == sorted(cirr_test1.subsets[query.id], key=ranked.index)[:3]
    assert all(p.stat().st_size <= submission.MAX_BYTES for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries left


def test_circo_file_built_from_a_run(circo_test, benchmarks_dir, tmp_path):
    """The official protocol keeps the reference: the file is the run's own top 50, as integers."""
    rankings = {q.id: [q.reference] + [str(100 + i) for i in range(50)] for q in circo_test.queries}
    run = Run(Ranking(qid, ids, [0.0] * len(ids)) for qid, ids in rankings.items())
    (path,) = write_submission(circo_test, run, tmp_path)
    content = json.loads(path.read_text())
    reference = int(circo_test.query_by_id["0"].reference)
    assert content["0"] == [reference] + list(range(100, 149))  # integers, reference kept where the run ranks it
    assert check_submission_file(circo_test, path) == "rankings"
    excluded = load_benchmark("circo", benchmarks_dir / "circo", "test", exclude_reference=True)
    (path,) = write_submission(excluded, run, tmp_path / "excluded")
    assert json.loads(path.read_text())["0"] == list(range(100, 150))  # only when asked: reference dropped


def test_too_short_runs_are_refused(cirr_test1):
    run = deep_run(cirr_test1)
    query = cirr_test1.queries[5]
    run[query.id] = run[query.id].top(20)
    with pytest.raises(FormatError, match=f"query '{query.id}' ranks only .* the recall file needs 50"):
        build_submission(cirr_test1, run)


def test_size_limit(cirr_test1, monkeypatch):
    monkeypatch.setattr(submission, "MAX_BYTES", 1_000)
    with pytest.raises(FormatError, match="over the server's limit of 1,000"):
        build_submission(cirr_test1, deep_run(cirr_test1))


def test_no_server_for_fashioniq(fashioniq_val):
    with pytest.raises(CirError, match="no evaluation server"):
        check_submission(fashioniq_val["dress"], {}, "f.json")
