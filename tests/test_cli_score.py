"""`cir score` and `cir submit` end to end through the CLI dispatcher (exit codes, one-line errors, written files)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from cir.cli import main
from cir.errors import FormatError
from cir.types import Ranking, Run


@pytest.fixture(scope="module")
def cirr_runs(cirr_val, tmp_path_factory):
    """Two run files on CIRR val: one ranks the target first for every query, the other for every other query."""
    folder = tmp_path_factory.mktemp("runs")
    paths = {}
    for name, stride in (("perfect", 1), ("half", 2)):
        rankings = []
        for index, query in enumerate(cirr_val.queries):
            target = cirr_val.targets[query.id][0]
            others = [m for m in cirr_val.subsets[query.id] if m != target]
            ids = [target, *others] if index % stride == 0 else [*others, target]
            rankings.append(Ranking(query.id, ids, [float(-r) for r in range(len(ids))]))
        paths[name] = Run(rankings).save(folder / f"{name}.json")
    return paths


def test_score_writes_every_metric(benchmarks_dir, cirr_val, cirr_runs, tmp_path, capsys):
    out = tmp_path / "scores.json"
    table = tmp_path / "scores.csv"
    code = main(["score", "cirr", "--root", str(benchmarks_dir / "cirr"), "--run", str(cirr_runs["half"]),
                 "--json", str(out), "--csv", str(table)])
    assert code == 0
    saved = json.loads(out.read_text())
    assert list(saved["rows"]["half"]) == cirr_val.metric_names
    expected_r1 = 100 * len(range(0, len(cirr_val.queries), 2)) / len(cirr_val.queries)
    assert saved["rows"]["half"]["recall@1"] == pytest.approx(expected_r1)
    assert saved["rows"]["half"]["recall@5"] == 100.0
    assert saved["benchmark"]["protocol"] == cirr_val.protocol
    assert table.read_text().splitlines()[0].startswith("system,recall@1,recall@5")
    assert "CIRR rc2 val" in capsys.readouterr().out


def test_score_compares_several_runs(benchmarks_dir, cirr_runs, tmp_path):
    out = tmp_path / "compare.json"
    code = main(["score", "cirr", "--root", str(benchmarks_dir / "cirr"),
                 "--run", str(cirr_runs["perfect"]), str(cirr_runs["half"]), "--json", str(out)])
    assert code == 0
    saved = json.loads(out.read_text())
    assert saved["rows"]["perfect"]["avg"] == 100.0
    assert saved["significance"]["beats"]["perfect"]["recall_subset@1"] == ["half"]
    assert saved["significance"]["beats"]["half"]["recall_subset@1"] == []


def test_score_fashioniq_all_categories(benchmarks_dir, fashioniq_val, tmp_path):
    for category, bench in fashioniq_val.items():
        Run(Ranking(q.id, [bench.targets[q.id][0]], [1.0]) for q in bench.queries).save(tmp_path / f"fiq.{category}.json")
    out = tmp_path / "fiq.json"
    code = main(["score", "fashioniq", "--root", str(benchmarks_dir / "fashioniq"),
                 "--run", str(tmp_path / "fiq.{category}.json"), "--json", str(out)])
    assert code == 0
    row = json.loads(out.read_text())["rows"]["fiq.{category}"]
    assert set(row) == {f"{c} recall@{k}" for c in fashioniq_val for k in (10, 50)} | {
        "mean recall@10", "mean recall@50", "avg"}
    assert all(v == 100.0 for v in row.values())


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_malformed_run_file_exits_2(benchmarks_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"12060": [["dev-244-0-img0", 1.0], 7.5]}))  # an integer would be an image id
    code = main(["score", "cirr", "--root", str(benchmarks_dir / "cirr"), "--run", str(bad)])
    assert code == 2
    err = one_line_error(capsys)
    assert str(bad) in err and "query 12060, entry 1" in err


def test_unknown_image_in_run_exits_2(benchmarks_dir, cirr_val, tmp_path, capsys):
    path = tmp_path / "stranger.json"
    Run(Ranking(q.id, ["dev-0-0-nope"] if i == 3 else [], [1.0] if i == 3 else [])
        for i, q in enumerate(cirr_val.queries)).save(path)
    assert main(["score", "cirr", "--root", str(benchmarks_dir / "cirr"), "--run", str(path)]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and cirr_val.queries[3].id in err and "dev-0-0-nope" in err


def test_missing_root_exits_2(cirr_runs, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert main(["score", "cirr", "--root", str(missing), "--run", str(cirr_runs["half"])]) == 2
    assert str(missing) in one_line_error(capsys)
    assert main(["score", "cirr", "--run", str(cirr_runs["half"])]) == 2
    assert "--root" in one_line_error(capsys)


def test_submit_check_demo_files(benchmarks_dir, capsys):
    demo = benchmarks_dir / "cirr/demo_files"
    code = main(["submit", "cirr", "--root", str(benchmarks_dir / "cirr"), "--check",
                 str(demo / "test1_pred_ranks_recall.json"), str(demo / "test1_pred_ranks_recall_subset.json")])
    assert code == 0
    assert capsys.readouterr().out.count("ok") == 2


def test_submit_writes_checked_files(benchmarks_dir, cirr_test1, tmp_path, capsys):
    run_path = tmp_path / "test1.json"
    head = cirr_test1.gallery.ids[:60]
    Run(Ranking(q.id, *ranked(head, cirr_test1.subsets[q.id])) for q in cirr_test1.queries).save(run_path)
    root = str(benchmarks_dir / "cirr")
    assert main(["submit", "cirr", "--root", root, "--run", str(run_path), "--out", str(tmp_path / "server")]) == 0
    written = sorted((tmp_path / "server").iterdir())
    assert [p.name for p in written] == ["cirr_test1_pred_ranks_recall.json", "cirr_test1_pred_ranks_recall_subset.json"]
    assert main(["submit", "cirr", "--root", root, "--check", *map(str, written)]) == 0
    broken = json.loads(written[0].read_text())
    del broken[cirr_test1.queries[0].id]
    written[0].write_text(json.dumps(broken))
    capsys.readouterr()
    assert main(["submit", "cirr", "--root", root, "--check", str(written[0])]) == 2
    assert f"pairid {cirr_test1.queries[0].id}" in one_line_error(capsys)


def ranked(head: list[str], members: list[str]) -> tuple[list[str], list[float]]:
    """`head`, then the subset members it lacks, with descending scores."""
    ids = head + [m for m in members if m not in head]
    return ids, [float(-r) for r in range(len(ids))]


def test_console_script_runs(benchmarks_dir, cirr_runs):
    """The installed entry point, in a fresh process: exit 0 and the table on stdout."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from cir.cli import main; sys.exit(main(sys.argv[1:]))",
         "score", "cirr", "--root", str(benchmarks_dir / "cirr"), "--run", str(cirr_runs["perfect"])],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "100.00" in result.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"0": ["271520", "355099"], "1": ["528417"], "0": ["534704"]}',
         "query 0 appears more than once"),
        ('{"0": [["271520", 2.0], ["355099", NaN]]}', "query 0, entry 1: score nan is not a finite number"),
        ('{"0": [["271520", 2.0]], "5": [["355099", 1.0], ["528417", -Infinity]]}',
         "query 5, entry 1: score -inf is not a finite number"),
    ],
    ids=["repeated query", "NaN", "infinity"],
)
def test_run_file_defects_are_one_line_errors(benchmarks_dir, tmp_path, capsys, text, message):
    """A query given twice (the last copy used to win silently) and non-finite scores name the file, query and entry."""
    path = tmp_path / "defect.json"
    path.write_text(text)
    with pytest.raises(FormatError, match=f"^{re.escape(str(path))}: {re.escape(message)}"):
        Run.load(path)
    assert main(["score", "circo", "--root", str(benchmarks_dir / "circo"), "--run", str(path)]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and message in err


def test_integer_ids_are_read_as_decimal_strings_never_bools(tmp_path):
    path = tmp_path / "ints.json"
    path.write_text('{"0": [271520, 355099], "1": [[528417, 0.5], ["534704", 0.25]]}')
    run = Run.load(path)
    assert run["0"].ids == ["271520", "355099"] and run["0"].scores == [2.0, 1.0]
    assert run["1"].ids == ["528417", "534704"] and run["1"].scores == [0.5, 0.25]
    path.write_text('{"0": [271520, true]}')
    with pytest.raises(FormatError, match="query 0, entry 1: expected"):
        Run.load(path)


def test_scores_against_the_order_warn_once_per_run(benchmarks_dir, circo_val, tmp_path, caplog):
    """Two queries whose scores rise down the list: one warning for the run, naming it and the first such query."""
    rankings = []
    for index, query in enumerate(circo_val.queries):
        ids = list(circo_val.targets[query.id])
        scores = [float(-r) for r in range(len(ids))]
        if index in (3, 7):
            scores = scores[::-1] if len(ids) > 1 else scores
            ids = ids + ["1"]
            scores = scores + [scores[-1] + 1.0]
        rankings.append(Ranking(query.id, ids, scores))
    path = Run(rankings).save(tmp_path / "misordered.json")
    root = str(benchmarks_dir / "circo")
    with caplog.at_level(logging.WARNING, logger="cir"):
        assert main(["score", "circo", "--root", root, "--run", str(path)]) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert str(path) in message and f"query {circo_val.queries[3].id} (and 1 more)" in message
    assert "the order of the ids is what gets scored" in message

    caplog.clear()
    ordered = Run(Ranking(q.id, circo_val.targets[q.id], [1.0] * len(circo_val.targets[q.id])) for q in circo_val.queries)
    with caplog.at_level(logging.WARNING, logger="cir"):
        assert main(["score", "circo", "--root", root, "--run", str(ordered.save(tmp_path / "ties.json"))]) == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # ties never contradict the order
