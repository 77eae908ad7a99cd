"""Reports and run comparisons: the table shows the numbers given, files hold the same numbers, significance marks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from cir.eval.report import metric_label, render_report, write_report
from cir.machine import machine_description
from cir.eval.significance import compare_runs, paired_p_value
from cir.types import Ranking, Run

ROWS = {
    "stage 1 (dense)": {"recall@1": 40.125, "recall@5": 70.0, "ms/query": 3.2},
    "stage 1 + 2": {"recall@1": 45.5, "recall@5": 69.0, "ms/query": 48.0},
}


def rendered(table) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    return console.export_text()


def test_render_report_layout():
    table = render_report("CIRR rc2 val", ROWS, "protocol line\nmachine line", extra_columns=("ms/query",))
    assert [c.header for c in table.columns] == ["", "R@1", "R@5", "ms/query"]
    assert table.row_count == 2
    text = rendered(table)
    assert "CIRR rc2 val" in text and "protocol line" in text and "machine line" in text
    assert "40.12" in text and "45.50" in text and "48.00" in text
    assert list(table.columns[1].cells) == ["40.12", "[bold]45.50[/]"]  # best per metric column in bold
    assert list(table.columns[3].cells) == ["3.20", "48.00"]  # extra columns are never "best"


def test_missing_values_show_a_dash():
    table = render_report("t", {"a": {"recall@1": 1.0}, "b": {"map@5": 2.0}}, "c")
    assert [c.header for c in table.columns] == ["", "R@1", "mAP@5"]
    assert list(table.columns[2].cells) == ["–", "2.00"]


def test_metric_labels():
    assert [metric_label(n) for n in ("recall@10", "recall_subset@2", "map@25", "avg", "dress recall@50")] == [
        "R@10", "Rsub@2", "mAP@25", "Avg", "dress R@50",
    ]


def test_write_report_same_numbers(tmp_path):
    json_path, csv_path = write_report(tmp_path / "report", "CIRR rc2 val", ROWS, "caption")
    assert (json_path.name, csv_path.name) == ("report.json", "report.csv")
    saved = json.loads(json_path.read_text())
    assert saved["rows"] == ROWS and saved["title"] == "CIRR rc2 val" and saved["caption"] == "caption"
    with csv_path.open() as f:
        lines = list(csv.DictReader(f))
    assert [line["system"] for line in lines] == list(ROWS)
    assert [float(line["recall@1"]) for line in lines] == [r["recall@1"] for r in ROWS.values()]


def test_machine_description():
    text = machine_description()
    assert "cores" in text and "CPU:" in text


def test_paired_p_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    b = a + rng.normal(0.5, 1.0, size=300)
    assert paired_p_value(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p_value(a, a) == 1.0
    assert paired_p_value(a, b, test="randomization", trials=2_000) < 0.01
    noise = a + rng.normal(0.0, 1.0, size=300) * 1e-3
    assert paired_p_value(a, noise - np.mean(noise - a), test="randomization", trials=2_000) > 0.05


def test_compare_runs_marks_significant_wins(fashioniq_val):
    bench = fashioniq_val["dress"]
    strong = Run((Ranking(q.id, list(bench.targets[q.id]), [1.0]) for q in bench.queries), name="strong")
    weak = Run(
        (Ranking(q.id, list(bench.targets[q.id]) if int(q.id) % 2 else [q.reference], [1.0]) for q in bench.queries),
        name="weak",
    )
    comparison = compare_runs(bench, {"strong": strong, "weak": weak, "again": strong})
    assert comparison.letters == {"strong": "a", "weak": "b", "again": "c"}
    assert comparison.means["strong"]["recall@10"] == 100.0
    assert comparison.beats("strong", "recall@10") == ["weak"]  # not "again": equal runs beat nobody
    assert comparison.beats("weak", "recall@10") == []
    assert comparison.p_values[("strong", "again")]["recall@10"] == 1.0
    text = rendered(comparison.table())
    assert "100.00ᵇ" in text and "strong (a)" in text and "t-test" in text
    saved = comparison.to_dict()
    assert saved["beats"]["again"]["recall@50"] == ["weak"]
    assert set(saved["p_values"]) == {"strong vs weak", "again vs strong", "again vs weak"}
    assert saved["rows"]["weak"]["recall@10"] == pytest.approx(100 * sum(int(q.id) % 2 for q in bench.queries) / len(bench.queries))
