"""Result tables: one `Report` behind `cir score`, `cir eval`, `cir report` and run comparisons.

A Report is a title, a caption (benchmark, split, protocol, machine) and one or more blocks of rows (run -> metric ->
value in percent); a breakdown has one block per group of queries. Every block may carry the paired significance
test of its runs (`Comparison`). The same numbers come out as a rich table, a pandas DataFrame, LaTeX (booktabs),
Markdown, HTML, JSON and CSV; the best value per metric of a block is in bold and each value carries the letters of
the runs it beats significantly. Reports built from runs also give the per-query table (`per_query()`) and
breakdowns by what the benchmark knows of its queries (`breakdown(by)`).
"""

from __future__ import annotations

import html
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from rich.table import Table
from rich.text import Text

from ..errors import CirError, require
from ..io import atomic_path, write_json, write_text

if TYPE_CHECKING:
    import pandas as pd

    from ..data.benchmark import Benchmark
    from ..types import Run
    from .significance import Comparison

Rows = Mapping[str, Mapping[str, float]]
MISSING = "–"
COUNT_COLUMNS = ("queries",)  # extra columns that hold counts, printed without decimals
SHORT_PREFIXES = (("recall_subset@", "Rsub@"), ("recall@", "R@"), ("map@", "mAP@"))
LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
SUPERSCRIPTS = str.maketrans(string.ascii_lowercase[:16], "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖ")


def report_columns(rows: Rows, extra_columns: Sequence[str] = ()) -> list[str]:
    """Metric columns in first-seen order, then the `extra_columns` (timings and the like) last."""
    columns = [c for r in rows.values() for c in r if c not in extra_columns]
    return list(dict.fromkeys(columns)) + [c for c in extra_columns if any(c in r for r in rows.values())]


def metric_label(name: str) -> str:
    """The literature's short column name: recall@5 -> R@5, recall_subset@1 -> Rsub@1, "dress map@10" -> "dress mAP@10"."""
    return " ".join(_short_word(word) for word in name.split(" "))


def _short_word(word: str) -> str:
    for prefix, short in SHORT_PREFIXES:
        if word.startswith(prefix):
            return short + word[len(prefix):]
    return "Avg" if word == "avg" else word


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (unicode passes through: pdflatex reads UTF-8)."""
    return "".join(LATEX_SPECIALS.get(c, c) for c in text)


def build_table(
    title: str, caption: str, columns: Sequence[str], body: Mapping[str, Sequence[str]], dim: Sequence[str] = ()
) -> Table:
    """A right-aligned table of pre-formatted cells; columns never shrink below their widest cell."""
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("", no_wrap=True)
    for i, column in enumerate(columns):
        width = max([len(metric_label(column))] + [len(Text.from_markup(c[i])) for c in body.values()])
        table.add_column(
            metric_label(column), justify="right", no_wrap=True, min_width=width, style="dim" if column in dim else None
        )
    for label, cells in body.items():
        table.add_row(label, *cells)
    return table


@dataclass
class Style:
    """How one output format marks a cell: bold for the best value, superscript letters, escaping of plain text."""

    bold: Callable[[str], str]
    marks: Callable[[str], str]
    escape: Callable[[str], str] = lambda text: text


RICH = Style(bold=lambda t: f"[bold]{t}[/]", marks=lambda m: m.translate(SUPERSCRIPTS), escape=lambda t: t.replace("[", r"\["))
LATEX = Style(bold=lambda t: rf"\textbf{{{t}}}", marks=lambda m: rf"\textsuperscript{{{m}}}" if m else "", escape=latex_escape)
MARKDOWN = Style(bold=lambda t: f"**{t}**", marks=lambda m: f"<sup>{m}</sup>" if m else "",
                 escape=lambda t: t.replace("|", r"\|"))
HTML = Style(bold=lambda t: f"<b>{t}</b>", marks=lambda m: f"<sup>{m}</sup>" if m else "", escape=html.escape)


@dataclass
class Block:
    """Rows of one group of queries (the whole split when `group` is None), with their significance test."""

    rows: dict[str, dict[str, float]]
    comparison: Comparison | None = None
    group: str | None = None


@dataclass
class Source:
    """What a report was scored from: a benchmark split, its runs, their per-query values, the annotation folder."""

    benchmark: Benchmark
    runs: dict[str, Run]
    scores: dict[str, dict[str, np.ndarray]]
    root: str | os.PathLike | None = None


@dataclass
class Report:
    """One table of results; see the module docstring. Build it with `from_runs`, `from_rows` or `breakdown`."""

    title: str
    caption: str
    blocks: list[Block]
    extra_columns: tuple[str, ...] = ()
    by: str | None = None  # the per-query field a breakdown groups by
    sections: dict[str, Any] = field(default_factory=dict)  # further JSON sections (benchmark, categories)
    sources: list[Source] = field(default_factory=list)
    # How several runs are tested ({"test", "alpha"}): what a breakdown's groups are tested with; None: one run.
    settings: dict[str, Any] | None = None

    # --- building -------------------------------------------------------------------------------------------------

    @classmethod
    def from_rows(cls, title: str, rows: Rows, caption: str, extra_columns: Sequence[str] = (), **sections: Any) -> Report:
        """A report of numbers already computed (`cir eval`'s rows with their timings, a summary)."""
        return cls(title, caption, [Block({k: dict(v) for k, v in rows.items()})], tuple(extra_columns), sections=sections)

    @classmethod
    def from_runs(
        cls,
        benchmark: Benchmark,
        runs: Mapping[str, Run],
        caption: str | None = None,
        alpha: float = 0.05,
        test: str = "t-test",
        correction: str = "none",
        root: str | os.PathLike | None = None,
    ) -> Report:
        """Score `runs` on `benchmark`; several runs are compared with a paired test per metric. `root` (the
        annotation folder) lets the per-query table read what the synthetic benchmark's metadata.json knows."""
        from .metrics import per_query_scores
        from .significance import check_test, compare_scores, correct

        check_test(test, correction)
        caption = caption or f"{benchmark.protocol}\n{_machine()}"
        scores = {name: per_query_scores(benchmark, run) for name, run in runs.items()}
        title = benchmark_title(benchmark)
        block = Block({name: {m: float(v.mean()) for m, v in s.items()} for name, s in scores.items()})
        settings = None
        if len(runs) > 1:
            block.comparison = correct([compare_scores(scores, title, caption, alpha, test)], correction)[0]
            settings = {"test": test, "alpha": alpha}
        return cls(title, caption, [block], sections={"benchmark": describe(benchmark)},
                   sources=[Source(benchmark, dict(runs), scores, root)], settings=settings)

    @property
    def comparison(self) -> Comparison | None:
        """The significance test of the first block (the whole split, unless a breakdown)."""
        return self.blocks[0].comparison

    @property
    def rows(self) -> dict[str, dict[str, float]]:
        """The first block's rows: run -> metric -> value in percent."""
        return self.blocks[0].rows

    @property
    def run_names(self) -> list[str]:
        return list(dict.fromkeys(name for block in self.blocks for name in block.rows))

    @property
    def letters(self) -> dict[str, str]:
        return {run: string.ascii_lowercase[i % 26] for i, run in enumerate(self.run_names)}

    def columns(self) -> list[str]:
        return report_columns({(i, k): r for i, b in enumerate(self.blocks) for k, r in b.rows.items()}, self.extra_columns)

    def legend(self) -> str:
        """The caption, then what the superscripts mean when the report tests significance."""
        tested = next((b.comparison for b in self.blocks if b.comparison is not None), None)
        return self.caption if tested is None else f"{self.caption}\n{tested.test_note()}"

    # --- per query and by group -----------------------------------------------------------------------------------

    def per_query(self) -> pd.DataFrame:
        """One row per query: id, reference, text, target, what the benchmark knows of it, and the target's rank
        (and subset rank) in each run; see `cir.eval.queries.query_table`."""
        from .queries import query_table

        if not self.sources:
            raise CirError(f"{self.title}: this report holds no runs, so it has no per-query table")
        pd = require("pandas", "report")
        return pd.concat([query_table(s.benchmark, s.runs, s.root) for s in self.sources], ignore_index=True)

    def breakdown(self, by: str, correction: str = "none") -> Report:
        """The metrics of every run per group of queries (`by`: a field of `per_query()`, e.g. edit, category),
        with the group sizes, a first group "all", and per group the paired test of the first block's settings;
        `correction` "holm" adjusts the p-values per metric over every group and pair of runs."""
        from .queries import group_order, query_fields
        from .significance import check_test, compare_scores, correct

        check_test(self.settings["test"] if self.settings else "t-test", correction)
        table = self.per_query()
        fields = query_fields(table)
        if by not in fields:
            known = ", ".join(fields) or "none for this benchmark"
            raise CirError(f"--by {by}: not a field of {self.title}'s queries (known: {known})")
        scores = {run: {m: np.concatenate([s.scores[run][m] for s in self.sources]) for m in self.sources[0].scores[run]}
                  for run in self.sources[0].scores}
        values = table[by].astype(str).to_numpy()
        groups = [("all", np.ones(len(table), dtype=bool))]
        groups += [(g, values == g) for g in group_order(sorted(set(values)))]
        blocks = []
        for group, mask in groups:
            sliced = {run: {m: v[mask] for m, v in s.items()} for run, s in scores.items()}
            rows = {run: {**{m: float(v.mean()) for m, v in s.items()}, "queries": int(mask.sum())}
                    for run, s in sliced.items()}
            block = Block(rows, group=group)
            if self.settings is not None:
                block.comparison = compare_scores(sliced, f"{self.title}: {group}", self.caption, **self.settings)
            blocks.append(block)
        comparisons = [b.comparison for b in blocks if b.comparison is not None]
        correct(comparisons, correction, family=" per metric over every group and pair of runs")
        return Report(f"{self.title}: by {by}", self.caption, blocks, ("queries",), by=by,
                      sections=dict(self.sections), sources=self.sources, settings=self.settings)

    # --- cells ----------------------------------------------------------------------------------------------------

    def cells(self, style: Style) -> list[tuple[str | None, str, list[str]]]:
        """(group, row label, formatted cells) per row: the best of a block's values per metric column in bold,
        and the letters of the runs each value beats significantly."""
        columns = self.columns()
        letters = self.letters
        out = []
        for block in self.blocks:
            compared = {c: [r[c] for r in block.rows.values() if c in r] for c in columns if c not in self.extra_columns}
            best = {c: max(values) for c, values in compared.items() if len(values) > 1}
            for run, values in block.rows.items():
                row = []
                for column in columns:
                    if column not in values:
                        row.append(MISSING)
                        continue
                    text = f"{values[column]:.0f}" if column in COUNT_COLUMNS else f"{values[column]:.2f}"
                    if best.get(column) == values[column]:
                        text = style.bold(text)
                    if block.comparison is not None and column in block.comparison.metric_names:
                        text += style.marks("".join(letters[o] for o in block.comparison.beats(run, column)))
                    row.append(text)
                label = style.escape(run) + (f" ({letters[run]})" if block.comparison is not None else "")
                out.append((block.group, label, row))
        return out

    # --- formats --------------------------------------------------------------------------------------------------

    def table(self) -> Table:
        """The rich table for the terminal."""
        columns = self.columns()
        table = Table(title=self.title, caption=self.legend(), caption_justify="left")
        if self.by is not None:
            table.add_column(self.by, no_wrap=True)
        table.add_column("", no_wrap=True)
        rows = self.cells(RICH)
        for i, column in enumerate(columns):
            width = max([len(metric_label(column))] + [len(Text.from_markup(r[2][i])) for r in rows])
            table.add_column(metric_label(column), justify="right", no_wrap=True, min_width=width,
                             style="dim" if column in self.extra_columns else None)
        groups = [group for group, _, _ in rows]
        for i, (group, label, cells) in enumerate(rows):
            head = [] if self.by is None else [RICH.escape(group) if i == 0 or groups[i - 1] != group else ""]
            last_of_group = self.by is not None and i + 1 < len(rows) and groups[i + 1] != group
            table.add_row(*head, label, *cells, end_section=last_of_group)
        return table

    def to_pandas(self) -> pd.DataFrame:
        """The numbers: index "system" (or (by, "system") for a breakdown), one column per metric name, in percent;
        `attrs` holds the title and caption."""
        pd = require("pandas", "report")
        records = [{**({self.by: b.group} if self.by else {}), "system": run, **values}
                   for b in self.blocks for run, values in b.rows.items()]
        frame = pd.DataFrame.from_records(records, columns=[*([self.by] if self.by else []), "system", *self.columns()])
        frame = frame.set_index([self.by, "system"] if self.by else "system")
        frame.attrs.update(title=self.title, caption=self.caption)
        return frame

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The DataFrame as CSV (empty where a row lacks a column); written atomically to `path` when given."""
        text = self.to_pandas().to_csv(lineterminator="\n")
        if path is not None:
            write_text(path, text)
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: title, caption, rows (metric names in percent), significance, further sections;
        a breakdown has `by` and `groups` (each with its rows, sizes and significance) instead of rows."""
        head: dict[str, Any] = {"title": self.title, "caption": self.caption}
        if self.by is None:
            body: dict[str, Any] = {"rows": self.rows}
            if self.comparison is not None:
                body["significance"] = self.comparison.to_dict()
        else:
            body = {"by": self.by, "groups": {
                b.group: {"rows": b.rows, **({"significance": b.comparison.to_dict()} if b.comparison else {})}
                for b in self.blocks}}
        return {**head, **body, **self.sections}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """`to_dict()` as JSON text; written atomically to `path` when given."""
        import json

        if path is not None:
            write_json(path, self.to_dict())
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_latex(self, path: str | os.PathLike | None = None, label: str | None = None) -> str:
        """A `table` float with a booktabs `tabular` (needs \\usepackage{booktabs}), the caption below it."""
        columns = self.columns()
        head = ([latex_escape(self.by)] if self.by else []) + [""] + [latex_escape(metric_label(c)) for c in columns]
        lines = [r"\begin{table}[t]", r"\centering",
                 rf"\begin{{tabular}}{{{'l' * (2 if self.by else 1)}{'r' * len(columns)}}}", r"\toprule",
                 " & ".join(head) + r" \\", r"\midrule"]
        previous = None
        for group, row_label, cells in self.cells(LATEX):
            if self.by is not None and previous is not None and group != previous:
                lines.append(r"\midrule")
            first = [latex_escape(group) if group != previous else ""] if self.by else []
            lines.append(" & ".join(first + [row_label] + cells) + r" \\")
            previous = group
        caption = " ".join(line if line.endswith((".", ":", ";")) else f"{line}."
                           for line in latex_escape(self.legend()).splitlines())
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(self.title)}. {caption}}}"]
        if label:
            lines.append(rf"\label{{{label}}}")
        lines.append(r"\end{table}")
        text = "\n".join(lines) + "\n"
        if path is not None:
            write_text(path, text)
        return text

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """A pipe table under a bold title, the caption below it as plain lines."""
        columns = self.columns()
        head = ([self.by] if self.by else []) + [""] + [metric_label(c) for c in columns]
        align = [":--"] * (2 if self.by else 1) + ["--:"] * len(columns)
        lines = [f"**{MARKDOWN.escape(self.title)}**", "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
        previous = None
        for group, row_label, cells in self.cells(MARKDOWN):
            first = [MARKDOWN.escape(group) if group != previous else ""] if self.by else []
            lines.append("| " + " | ".join(first + [row_label] + cells) + " |")
            previous = group
        lines += [""] + [f"{line}  " for line in self.legend().splitlines()]
        text = "\n".join(lines).rstrip() + "\n"
        if path is not None:
            write_text(path, text)
        return text

    def to_html(self) -> str:
        """An HTML `table` with its caption (a fragment for a page; see `cir.eval.html`)."""
        columns = self.columns()
        head = ([self.by] if self.by else []) + [""] + [metric_label(c) for c in columns]
        lines = ["<table>", f"<caption>{html.escape(self.title)}</caption>",
                 "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
        previous = None
        for group, row_label, cells in self.cells(HTML):
            rule = ' class="group"' if self.by and previous is not None and group != previous else ""
            first = [html.escape(group) if group != previous else ""] if self.by else []
            lines.append(f"<tr{rule}>" + "".join(f"<th>{c}</th>" for c in first + [row_label])
                         + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            previous = group
        lines += ["</tbody>", "</table>", f'<p class="caption">{html.escape(self.legend()).replace(chr(10), "<br>")}</p>']
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report in the format its suffix names: .json, .csv, .tex, .md."""
        path = Path(path)
        writers = {".json": self.to_json, ".csv": self.to_csv, ".tex": self.to_latex, ".md": self.to_markdown}
        if path.suffix not in writers:
            raise CirError(f"{path}: unknown report format (known: {', '.join(writers)})")
        writers[path.suffix](path)
        return path


def write_per_query(frame: pd.DataFrame, path: str | os.PathLike, flag: str = "--per-query") -> Path:
    """The per-query DataFrame as .parquet (pyarrow) or .csv, written atomically."""
    path = Path(path)
    if path.suffix not in (".parquet", ".csv"):
        raise CirError(f"{flag} {path}: give a .parquet or .csv file")
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            require("pyarrow", "report")
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, lineterminator="\n")
    return path


def benchmark_title(benchmark: Benchmark) -> str:
    """The benchmark's label, with the synthetic benchmark named as such (its figures are not CIRR figures)."""
    if benchmark.name == "cirr" and benchmark.release == "synth":
        return f"cir synthetic benchmark (CIRR layout, not CIRR) {benchmark.split}"
    return benchmark.label


def describe(benchmark: Benchmark) -> dict[str, Any]:
    """The benchmark section of a report's JSON."""
    return {
        "name": benchmark.name,
        "split": benchmark.split,
        "release": benchmark.release,
        "category": benchmark.category,
        "protocol": benchmark.protocol,
        "queries": len(benchmark.queries),
        "gallery": len(benchmark.gallery),
    }


def _machine() -> str:
    from ..machine import machine_description

    return machine_description()


def render_report(title: str, rows: Rows, caption: str, extra_columns: Sequence[str] = ()) -> Table:
    """One row per system, one column per metric (the best of several values in bold), then the extra columns."""
    return Report.from_rows(title, rows, caption, extra_columns).table()


def write_report(path_stem: str | os.PathLike, title: str, rows: Rows, caption: str) -> tuple[Path, Path]:
    """The same numbers as `<stem>.json` and `<stem>.csv`, each written atomically."""
    stem = Path(path_stem)
    report = Report.from_rows(title, rows, caption)
    return report.write(stem.with_name(stem.name + ".json")), report.write(stem.with_name(stem.name + ".csv"))
