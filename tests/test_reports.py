"""The Report behind cir score / eval / report: LaTeX that compiles and holds the JSON's numbers, per-query ranks
that give back the metrics, breakdowns with Holm's correction, the files and the page of `cir report`."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import pandas as pd
import pytest

from cir.cli import main
from cir.data import load_benchmark
from cir.eval.queries import first_rank, query_fields, rank_column, subset_rank_column
from cir.eval.report import Report
from cir.eval.significance import holm
from cir.types import Ranking, Run

LATEX_DOCUMENT = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage{booktabs}
\begin{document}
%s
\end{document}
"""


def staged_runs(benchmark, seed: int = 0) -> dict[str, Run]:
    """A "stage1" run (the target at a random rank of 20, or missing) and a "stage2" rerank of it that lifts the
    target for two queries in three and sinks it for the rest."""
    rng = random.Random(seed)
    gallery = list(benchmark.gallery.ids)
    runs: dict[str, list[Ranking]] = {"stage1": [], "stage2": []}
    for i, query in enumerate(benchmark.queries):
        target = benchmark.targets[query.id][0]
        members = [m for m in benchmark.subsets[query.id] if m != target]
        others = [g for g in rng.sample(gallery, 30) if g not in (target, query.reference) and g not in members]
        ids = (members + others)[:19]
        if i % 7:
            ids.insert(rng.randrange(len(ids) + 1), target)
        if i % 5 == 0:
            rng.shuffle(ids)
        reranked = ([target] + [x for x in ids if x != target]) if i % 3 and target in ids else list(reversed(ids))
        scores = [float(-r) for r in range(len(ids))]
        runs["stage1"].append(Ranking(query.id, ids, scores))
        runs["stage2"].append(Ranking(query.id, reranked, scores))
    return {name: Run(rankings) for name, rankings in runs.items()}


@pytest.fixture(scope="module")
def synth_val(synth_tiny):
    return load_benchmark("cirr", synth_tiny, "val")


@pytest.fixture(scope="module")
def report(synth_val, synth_tiny) -> Report:
    return Report.from_runs(synth_val, staged_runs(synth_val), root=synth_tiny)


@pytest.fixture(scope="module")
def run_files(synth_val, tmp_path_factory):
    folder = tmp_path_factory.mktemp("staged")
    return [str(run.save(folder / f"run.{name}.json")) for name, run in staged_runs(synth_val).items()]


def latex_rows(tex: str) -> dict[str, list[str]]:
    """Row label -> cells of a single-block LaTeX table."""
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule", 1)[0]
    rows = {}
    for line in body.strip().splitlines():
        label, *cells = [c.strip() for c in line.rstrip("\\ ").split("&")]
        rows[label] = cells
    return rows


def test_latex_of_a_comparison_compiles_and_holds_the_json_numbers(report, tmp_path):
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.fail("pdflatex not found: apt-get install texlive-latex-base texlive-latex-recommended (see .ci/run)")
    tex = report.to_latex()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\caption{" in tex
    (tmp_path / "doc.tex").write_text(LATEX_DOCUMENT % tex, encoding="utf-8")
    done = subprocess.run([pdflatex, "-halt-on-error", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0

    saved = json.loads(report.to_json())
    rows = latex_rows(tex)
    letters = report.letters
    assert list(rows) == [f"{run} ({letters[run]})" for run in saved["rows"]]
    for run, values in saved["rows"].items():
        cells = rows[f"{run} ({letters[run]})"]
        for metric, cell in zip(values, cells):
            match = re.fullmatch(r"(\\textbf\{)?([0-9.]+)\}?(\\textsuperscript\{([a-z]+)\})?", cell)
            assert match, cell
            assert float(match.group(2)) == pytest.approx(values[metric], abs=0.005)
            best = max(v[metric] for v in saved["rows"].values())
            assert bool(match.group(1)) == (values[metric] == best)
            beaten = saved["significance"]["beats"][run][metric]
            assert (match.group(4) or "") == "".join(letters[b] for b in beaten)
    assert any(saved["significance"]["beats"][run][m] for run in saved["rows"] for m in saved["rows"][run])
    assert "cir synthetic benchmark" in tex and "CPU:" in tex


def test_recall_recomputed_from_the_per_query_ranks(report, synth_val):
    table = report.per_query()
    assert len(table) == len(synth_val.queries)
    assert list(table.columns[:5]) == ["query_id", "reference", "text", "target", "targets"]
    for run, metrics in report.rows.items():
        for metric, value in metrics.items():
            kind, _, k = metric.partition("@")
            if kind == "recall":
                ranks = table[rank_column(run)]
            elif kind == "recall_subset":
                ranks = table[subset_rank_column(run)]
            else:
                continue
            assert 100.0 * (ranks.fillna(10**9) <= int(k)).mean() == pytest.approx(value)


def test_first_rank_follows_the_reference_rule():
    assert first_rank(["r", "x", "t"], {"t"}, reference="r") == 2
    assert first_rank(["r", "x", "t"], {"t"}) == 3
    assert first_rank(["x"], {"t"}) is None


def test_per_query_fields_per_benchmark(report, cirr_val, fashioniq_val):
    table = report.per_query()
    assert query_fields(table) == ["edit", "parts", "compound", "heldout_phrasing"]
    assert set(table["edit"]) <= {"add", "remove", "recolour", "reshape", "resize", "move", "compound"}
    assert (table["compound"] == (table["edit"] == "compound")).all()
    assert table.loc[table["compound"], "parts"].str.contains(r"\+").all()
    one = {"x": Run(Ranking(q.id, [cirr_val.targets[q.id][0]], [1.0]) for q in cirr_val.queries)}
    assert query_fields(Report.from_runs(cirr_val, one).per_query()) == []  # CIRR: nothing more
    dress = fashioniq_val["dress"]
    one = {"x": Run(Ranking(q.id, [dress.targets[q.id][0]], [1.0]) for q in dress.queries)}
    assert set(Report.from_runs(dress, one).per_query()["category"]) == {"dress"}


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_breakdown_by_edit_with_holm(report, synth_val):
    plain = report.breakdown("edit")
    corrected = report.breakdown("edit", correction="holm")
    groups = [b.group for b in plain.blocks]
    assert groups[0] == "all"
    table = report.per_query()
    sizes = {b.group: b.rows["stage1"]["queries"] for b in plain.blocks}
    assert sizes["all"] == len(synth_val.queries) == sum(v for g, v in sizes.items() if g != "all")
    assert sizes == {"all": len(table), **table["edit"].value_counts().to_dict()}
    assert plain.blocks[0].rows["stage2"]["recall@1"] == pytest.approx(report.rows["stage2"]["recall@1"])
    edit = groups[1]
    mask = table["edit"] == edit
    expected = 100.0 * (table.loc[mask, rank_column("stage2")].fillna(10**9) <= 5).mean()
    assert plain.blocks[1].rows["stage2"]["recall@5"] == pytest.approx(expected)
    for raw, adjusted in zip(plain.blocks, corrected.blocks):
        for pair, values in raw.comparison.p_values.items():
            for metric, p in values.items():
                assert adjusted.comparison.adjusted[pair][metric] >= p - 1e-12
    assert "Holm-corrected per metric over every group" in corrected.legend()
    frame = corrected.to_pandas()
    assert frame.index.names == ["edit", "system"] and "queries" in frame.columns
    assert "Holm" in corrected.to_latex() and "| edit |" in corrected.to_markdown()


def test_score_writes_tables_per_query_and_breakdown(run_files, synth_tiny, tmp_path, capsys):
    out = {s: tmp_path / f"t.{s}" for s in ("json", "csv", "tex", "md")}
    per_query = tmp_path / "q.parquet"
    assert main(["score", "cirr", "--root", str(synth_tiny), "--run", *run_files, "--by", "edit",
                 "--correction", "holm", "--json", str(out["json"]), "--csv", str(out["csv"]),
                 "--latex", str(out["tex"]), "--markdown", str(out["md"]), "--per-query", str(per_query)]) == 0
    saved = json.loads(out["json"].read_text())
    assert saved["by"] == "edit" and "all" in saved["groups"]
    frame = pd.read_csv(out["csv"])
    assert list(frame.columns[:3]) == ["edit", "system", "recall@1"]
    assert frame["recall@1"].iloc[0] == pytest.approx(saved["groups"]["all"]["rows"]["run.stage1"]["recall@1"])
    queries = pd.read_parquet(per_query)
    assert {"rank run.stage1", "rank run.stage2", "subset_rank run.stage2", "edit"} <= set(queries.columns)
    assert r"\toprule" in out["tex"].read_text() and "**" in out["md"].read_text()


def test_score_unknown_field_and_bad_per_query_suffix_exit_2(run_files, synth_tiny, tmp_path, capsys):
    assert main(["score", "cirr", "--root", str(synth_tiny), "--run", *run_files, "--by", "colour"]) == 2
    err = capsys.readouterr().err
    assert "--by colour" in err and "edit" in err and "Traceback" not in err
    assert main(["score", "cirr", "--root", str(synth_tiny), "--run", *run_files,
                 "--per-query", str(tmp_path / "q.xlsx")]) == 2
    assert "--per-query" in capsys.readouterr().err


def test_cir_report_writes_tables_figures_and_a_static_page(run_files, synth_tiny, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *run_files, "--benchmark", "cirr", "--root", str(synth_tiny), "--by", "edit",
                 "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    for stem in ("table", "by_edit"):
        assert {f"{stem}.{s}" for s in ("tex", "md", "csv", "json")} <= names
    for stem in ("recall_at_k", "rank_shift.run.stage1.run.stage2", "by_edit.avg"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert page.count("<svg") == 3 and "<table>" in page and "CPU:" in page
    # nothing fetched: no script, no stylesheet link, no remote image or font (SVG namespaces are only names)
    assert "<script" not in page and "<link" not in page and "url(http" not in page
    assert re.search(r"""(src|href)=["']https?:""", page) is None
