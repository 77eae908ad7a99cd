"""Metrics and run validation: hand-checked small cases, perfect and adversarial runs, random runs against the
analytical expectation (fixed seeds, within a few standard errors)."""

from __future__ import annotations

from operator import itemgetter

import numpy as np
import pytest

from cir.errors import CirError, FormatError, UnknownIdError
from cir.eval import evaluate, per_query_scores, validate_run
from cir.eval.metrics import (
    average_precision_at,
    hit_at,
    parse_metric,
    query_scores,
    restrict_to,
    summarize_categories,
    without_reference,
)
from cir.types import Ranking, Run


def make_run(rankings: dict[str, list[str]], name: str = "test") -> Run:
    return Run((Ranking(qid, ids, [float(len(ids) - r) for r in range(len(ids))]) for qid, ids in rankings.items()), name)


def test_parse_metric():
    assert parse_metric("recall_subset@3") == ("recall_subset", 3)
    assert parse_metric("map@50") == ("map", 50)
    with pytest.raises(CirError, match="unknown metric 'ndcg@10'"):
        parse_metric("ndcg@10")


def test_reference_is_dropped_before_the_cut():
    assert without_reference(["r", "a", "b", "c"], "r", 2) == ["a", "b"]
    assert without_reference(["a", "r", "b"], "r", 2) == ["a", "b"]
    assert without_reference(["a", "b", "r"], None, 2) == ["a", "b"]


def test_restrict_keeps_order_and_skips_absent_members():
    assert restrict_to(["x", "m3", "y", "m1", "m2"], ["m1", "m2", "m3", "m4"]) == ["m3", "m1", "m2"]


def test_hit_and_average_precision():
    assert hit_at(["a", "t"], {"t"}, 1) == 0.0 and hit_at(["a", "t"], {"t"}, 2) == 1.0
    # hits at ranks 1 and 3 of two ground truths: (1/1 + 2/3) / min(3, 2)
    assert average_precision_at(["g1", "x", "g2"], {"g1", "g2"}, 3) == pytest.approx((1 + 2 / 3) / 2)
    # one hit at rank 2 of five ground truths, cut at 3: (1/2) / min(3, 5)
    assert average_precision_at(["x", "g1", "y"], {"g1", "g2", "g3", "g4", "g5"}, 3) == pytest.approx(0.5 / 3)
    assert average_precision_at(["x", "y"], {"g"}, 2) == 0.0


def test_query_scores_combines_rules():
    scores = query_scores(
        ["ref", "a", "t", "b"], {"t"}, ["recall@1", "recall@2", "recall_subset@1"], reference="ref", members=["b", "t"]
    )
    assert scores == {"recall@1": 0.0, "recall@2": 1.0, "recall_subset@1": 1.0}


def test_perfect_runs_score_100(cirr_val, fashioniq_val, circo_val):
    for bench in (cirr_val, fashioniq_val["toptee"], circo_val):
        run = make_run({q.id: list(bench.targets[q.id]) for q in bench.queries})
        scores = evaluate(bench, run)
        assert list(scores) == bench.metric_names
        assert all(value == pytest.approx(100.0) for value in scores.values()), (bench.label, scores)


def test_reference_first_target_second(cirr_val, fashioniq_val):
    for bench, expected_r1 in ((cirr_val, 100.0), (fashioniq_val["dress"], 0.0)):
        run = make_run({q.id: [q.reference, bench.targets[q.id][0]] for q in bench.queries})
        scores = evaluate(bench, run)
        assert scores["recall@1"] == expected_r1, bench.label
        assert scores["recall@5"] == 100.0


def test_per_query_means_are_the_metrics(fashioniq_val):
    bench = fashioniq_val["shirt"]
    run = make_run({q.id: [bench.targets[q.id][0]] if int(q.id) % 3 == 0 else [q.reference] for q in bench.queries})
    per_query = per_query_scores(bench, run)
    scores = evaluate(bench, run)
    assert {m: float(v.mean()) for m, v in per_query.items()} == scores
    assert per_query["recall@10"].shape == (len(bench.queries),)
    assert scores["recall@10"] == pytest.approx(100 * len(range(0, len(bench.queries), 3)) / len(bench.queries))
    assert scores["avg"] == pytest.approx((scores["recall@10"] + scores["recall@50"]) / 2)


def assert_near(observed: float, expected: float, standard_error: float, label: str) -> None:
    assert abs(observed - expected) < 4 * standard_error, f"{label}: {observed:.3f} vs expected {expected:.3f}"


def bernoulli_se(p: float, n: int) -> float:
    """Standard error of a mean of n Bernoulli(p) draws, in percent (floored so p near 0 keeps a tolerance)."""
    return 100 * max(np.sqrt(p * (1 - p) / n), 1 / n)


def test_random_cirr_run_matches_expectation(cirr_val):
    """Random rankings: an ordered random sample of 51 gallery images, then the subset members it missed, shuffled.
    Dropping the reference leaves the target uniform among the other N - 1 images (Recall@K = K / (N - 1)), and no
    member is favoured, so the target is uniform among the 5 members (Recall_subset@k = k / 5)."""
    rng = np.random.default_rng(0)
    ids, n_images, n_queries = cirr_val.gallery.ids, len(cirr_val.gallery), len(cirr_val.queries)
    rankings = {}
    for query in cirr_val.queries:
        head = list(itemgetter(*rng.choice(n_images, 51, replace=False))(ids))
        missed = [m for m in cirr_val.subsets[query.id] if m not in head]
        rankings[query.id] = head + [missed[i] for i in rng.permutation(len(missed))]
    run = make_run(rankings)
    scores = evaluate(cirr_val, run)
    expected = {f"recall@{k}": k / (n_images - 1) for k in (1, 5, 10, 50)}
    expected |= {f"recall_subset@{k}": k / 5 for k in (1, 2, 3)}
    for metric, p in expected.items():
        assert_near(scores[metric], 100 * p, bernoulli_se(p, n_queries), metric)
    avg_se = 0.5 * np.hypot(bernoulli_se(expected["recall@5"], n_queries), bernoulli_se(0.2, n_queries))
    assert_near(scores["avg"], 50 * (expected["recall@5"] + expected["recall_subset@1"]), avg_se, "avg")


def test_random_fashioniq_run_matches_expectation(fashioniq_val):
    """A uniformly random ordered sample of 50 gallery images: the reference stays, so Recall@K = K / N."""
    rng = np.random.default_rng(1)
    for category, bench in fashioniq_val.items():
        ids, n_images = bench.gallery.ids, len(bench.gallery)
        run = make_run({q.id: list(itemgetter(*rng.choice(n_images, 50, replace=False))(ids)) for q in bench.queries})
        scores = evaluate(bench, run)
        for k in (1, 5, 10, 50):
            p = k / n_images
            assert_near(scores[f"recall@{k}"], 100 * p, bernoulli_se(p, len(bench.queries)), f"{category} R@{k}")


def expected_average_precision(k: int, relevant: int, candidates: int) -> float:
    """E[AP@k] for a uniformly random order of `candidates` items, `relevant` of them ground truths:
    sum over ranks i <= k of E[rel_i * hits_i] / i, with E[rel_i * hits_i] = G/M + (i - 1) G(G - 1) / (M(M - 1))."""
    g, m = relevant, candidates
    ranks = np.arange(1, k + 1)
    joint = g / m + (ranks - 1) * g * (g - 1) / (m * (m - 1))
    return float(np.sum(joint / ranks) / min(k, g))


def test_random_circo_run_matches_expectation(circo_val):
    """Each query ranks its reference, its ground truths and 40 distractors in a random order; the reference stays in
    the ranking (the official protocol), so it is one more distractor."""
    rng = np.random.default_rng(2)
    distractors = [str(10_000_000 + i) for i in range(40)]
    rankings, expected = {}, {k: [] for k in (5, 10, 25, 50)}
    for query in circo_val.queries:
        pool = [query.reference, *circo_val.targets[query.id], *distractors]
        rankings[query.id] = [pool[i] for i in rng.permutation(len(pool))]
        for k in expected:
            expected[k].append(expected_average_precision(k, len(circo_val.targets[query.id]), len(pool)))
    per_query = per_query_scores(circo_val, make_run(rankings))
    for k, values in expected.items():
        observed = per_query[f"map@{k}"]
        standard_error = observed.std(ddof=1) / np.sqrt(len(observed))
        assert_near(observed.mean(), 100 * float(np.mean(values)), standard_error, f"map@{k}")


def test_short_runs_are_scored(cirr_val):
    """A run may stop early: what it leaves out never counts as a hit."""
    run = make_run({q.id: [] for q in cirr_val.queries})
    assert all(v == 0.0 for v in evaluate(cirr_val, run).values())


def test_validation_names_query_and_id(cirr_val):
    first, second = cirr_val.queries[0], cirr_val.queries[1]
    good = {q.id: [cirr_val.targets[q.id][0]] for q in cirr_val.queries}

    missing = dict(good)
    del missing[second.id]
    with pytest.raises(FormatError, match=f"no ranking for query '{second.id}'"):
        validate_run(cirr_val, make_run(missing))

    with pytest.raises(UnknownIdError, match="query '999999' is not a query of CIRR rc2 val"):
        validate_run(cirr_val, make_run({**good, "999999": []}))

    stranger = {**good, first.id: [cirr_val.targets[first.id][0], "test1-147-1-img1"]}
    with pytest.raises(UnknownIdError, match=f"query '{first.id}' ranks image 'test1-147-1-img1', which is not in"):
        evaluate(cirr_val, make_run(stranger))

    target = cirr_val.targets[first.id][0]
    twice = {**good, first.id: [target, first.reference, target]}
    with pytest.raises(FormatError, match=f"query '{first.id}' ranks image '{target}' more than once"):
        evaluate(cirr_val, make_run(twice))


def test_unknown_gallery_checks_id_form(circo_val):
    run = make_run({q.id: [] for q in circo_val.queries})
    run[circo_val.queries[0].id] = Ranking(circo_val.queries[0].id, ["000000271520"], [1.0])
    with pytest.raises(UnknownIdError, match="'000000271520'.*gallery not loaded"):
        validate_run(circo_val, run)


def test_no_ground_truth_on_test_splits(cirr_test1):
    run = make_run({q.id: [] for q in cirr_test1.queries})
    validate_run(cirr_test1, run)
    with pytest.raises(CirError, match="no ground truth.*cir submit"):
        evaluate(cirr_test1, run)


def test_summarize_categories():
    per_category = {
        "dress": {"recall@10": 30.0, "recall@50": 50.0, "recall@1": 5.0},
        "shirt": {"recall@10": 20.0, "recall@50": 40.0, "recall@1": 4.0},
    }
    summary = summarize_categories(per_category, ("recall@10", "recall@50"))
    assert list(summary) == [
        "dress recall@10", "dress recall@50", "shirt recall@10", "shirt recall@50",
        "mean recall@10", "mean recall@50", "avg",
    ]
    assert summary["mean recall@10"] == 25.0 and summary["mean recall@50"] == 45.0
    assert summary["avg"] == 35.0
