"""CIRCO as its official evaluation code scores it: the reference stays in the ranking, run files may hold integer
ids (the official example submission), and a server file written by `cir submit` scores as the run it came from.

The official metric is recomputed here from its published definition, on the raw annotation file, without cir's
readers or metrics: AP@K = (1 / min(K, |G|)) * sum over ranks i <= K of P@i * rel(i), where rel(i) says whether the
i-th submitted id is a ground truth and P@i is the fraction of ground truths among the first i; mAP@K is its mean
over the queries, in percent. Submitted ids are taken as they are: nothing is removed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cir.cli import main
from cir.data import load_benchmark
from cir.eval import check_submission_file, evaluate, write_submission
from cir.types import Ranking, Run

KS = (5, 10, 25, 50)


def official_ap(submitted: list[int], ground_truths: set[int], k: int) -> float:
    """AP@k of one query, from the definition above."""
    found, total = 0, 0.0
    for i, image in enumerate(submitted[:k], start=1):
        if image in ground_truths:
            found += 1
            total += found / i
    return total / min(k, len(ground_truths))


def official_metrics(annotation_file: Path, predictions: dict[str, list[int]]) -> dict[str, float]:
    """mAP@{5,10,25,50} in percent over every query of the annotation file."""
    ground_truths = {str(e["id"]): set(e["gt_img_ids"]) for e in json.loads(annotation_file.read_text())}
    assert set(predictions) == set(ground_truths)
    return {
        f"map@{k}": 100 * float(np.mean([official_ap(predictions[q], ground_truths[q], k) for q in ground_truths]))
        for k in KS
    }


@pytest.fixture(scope="module")
def annotations(benchmarks_dir: Path) -> Path:
    return benchmarks_dir / "circo/annotations/val.json"


@pytest.fixture(scope="module")
def raw_queries(annotations: Path) -> list[dict]:
    return json.loads(annotations.read_text())


def score_file(benchmarks_dir: Path, run_path: Path, out: Path, *flags: str) -> dict[str, float]:
    """`cir score circo` on val; the row of the run, from the written JSON report."""
    code = main(["score", "circo", "--root", str(benchmarks_dir / "circo"), "--run", str(run_path),
                 "--json", str(out), *flags])
    assert code == 0
    return json.loads(out.read_text())["rows"][run_path.stem]


def fillers(rng: np.random.Generator, avoid: set[int], n: int) -> list[int]:
    """`n` distinct COCO-like ids outside `avoid`."""
    out: list[int] = []
    while len(out) < n:
        candidate = int(rng.integers(1, 600_000))
        if candidate not in avoid and candidate not in out:
            out.append(candidate)
    return out


def test_reference_first_run_scores_as_the_official_code(benchmarks_dir, annotations, raw_queries, tmp_path):
    """Every query ranks its reference first, then its ground truths, then fillers: the official code counts the
    reference as a miss at rank 1; only the explicit, non-official exclusion turns that into a perfect score."""
    rng = np.random.default_rng(0)
    predictions = {}
    for entry in raw_queries:
        gt = list(entry["gt_img_ids"])
        avoid = set(gt) | {entry["reference_img_id"]}
        predictions[str(entry["id"])] = [entry["reference_img_id"], *gt, *fillers(rng, avoid, 50 - len(gt))]
    path = tmp_path / "reference_first.json"
    Run(Ranking(q, [str(i) for i in ids], [float(-r) for r in range(len(ids))]) for q, ids in predictions.items()).save(path)

    official = official_metrics(annotations, predictions)
    scored = score_file(benchmarks_dir, path, tmp_path / "kept.json")
    assert scored == pytest.approx(official, abs=1e-9)
    assert all(value < 90 for value in official.values())  # the reference really costs something here
    assert "reference kept, as the official evaluation code" in json.loads((tmp_path / "kept.json").read_text())["caption"]

    excluded = score_file(benchmarks_dir, path, tmp_path / "excluded.json", "--exclude-reference")
    assert excluded == pytest.approx({f"map@{k}": 100.0 for k in KS})
    report = json.loads((tmp_path / "excluded.json").read_text())
    assert "reference excluded (not the official protocol: figures not comparable)" in report["caption"]


def test_noisy_run_scores_as_the_official_code(benchmarks_dir, annotations, raw_queries, tmp_path):
    """Ground truths, the reference and distractors shuffled, a random length of 50 to 80, written as the official
    format (`{"qid": [int ids]}`): cir's figures are the official ones to rounding."""
    rng = np.random.default_rng(1)
    predictions = {}
    for entry in raw_queries:
        gt = list(entry["gt_img_ids"])
        keep = gt[: int(rng.integers(0, len(gt) + 1))]
        pool = [*keep, entry["reference_img_id"], *fillers(rng, set(gt) | {entry["reference_img_id"]}, 80)]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        predictions[str(entry["id"])] = pool[: int(rng.integers(50, 81))]
    path = tmp_path / "noisy.json"
    path.write_text(json.dumps(predictions))

    official = official_metrics(annotations, predictions)
    assert 0 < official["map@50"] < 100
    assert score_file(benchmarks_dir, path, tmp_path / "noisy_scores.json") == pytest.approx(official, abs=1e-9)


def test_official_example_submission_is_read_and_scored(benchmarks_dir, annotations, tmp_path):
    """CIRCO's own `submission_val.json` (integer ids, one query listing its reference) scores as the official code."""
    example = benchmarks_dir / "circo/submission_examples/submission_val.json"
    run = Run.load(example)
    first = json.loads(example.read_text())["0"]
    assert run["0"].ids == [str(i) for i in first]
    scored = score_file(benchmarks_dir, example, tmp_path / "example.json")
    assert scored == pytest.approx(official_metrics(annotations, json.loads(example.read_text())), abs=1e-9)


def test_submission_file_scores_as_its_run(benchmarks_dir, circo_val, tmp_path):
    """A run deeper than 50 that ranks its reference inside the top 50 for most queries: the written server file
    passes the checks and `cir score` on it gives the run's figures, under either reference rule."""
    rng = np.random.default_rng(2)
    rankings = {}
    for query in circo_val.queries:
        gt = [int(i) for i in circo_val.targets[query.id]]
        pool = [*gt[::2], *fillers(rng, set(gt) | {int(query.reference)}, 70)]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        pool.insert(int(rng.integers(0, 60)), int(query.reference))
        rankings[query.id] = [str(i) for i in pool]
    run = Run(Ranking(q, ids, [float(-r) for r in range(len(ids))]) for q, ids in rankings.items())
    assert sum(q.reference in rankings[q.id][:50] for q in circo_val.queries) > len(circo_val.queries) // 2

    (path,) = write_submission(circo_val, run, tmp_path / "kept")
    assert check_submission_file(circo_val, path) == "rankings"
    content = json.loads(path.read_text())
    assert all(content[q.id] == [int(i) for i in rankings[q.id][:50]] for q in circo_val.queries)
    assert score_file(benchmarks_dir, path, tmp_path / "kept.json") == evaluate(circo_val, run)

    excluded = load_benchmark("circo", benchmarks_dir / "circo", "val", exclude_reference=True)
    (path,) = write_submission(excluded, run, tmp_path / "excluded")
    assert check_submission_file(excluded, path) == "rankings"
    assert not any(int(q.reference) in json.loads(path.read_text())[q.id] for q in excluded.queries)
    expected = evaluate(excluded, run)
    assert expected != evaluate(circo_val, run)
    assert score_file(benchmarks_dir, path, tmp_path / "excluded.json", "--exclude-reference") == expected
