"""Result tables: a rich table for the terminal, the same numbers as JSON and CSV, and the machine they came from."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.table import Table
from rich.text import Text

from ..io import write_json, write_text

Rows = Mapping[str, Mapping[str, float]]
MISSING = "–"


def report_columns(rows: Rows, extra_columns: Sequence[str] = ()) -> list[str]:
    """Metric columns in first-seen order, then the `extra_columns` (timings and the like) last."""
    columns = [c for r in rows.values() for c in r if c not in extra_columns]
    return list(dict.fromkeys(columns)) + [c for c in extra_columns if any(c in r for r in rows.values())]


SHORT_PREFIXES = (("recall_subset@", "Rsub@"), ("recall@", "R@"), ("map@", "mAP@"))


def metric_label(name: str) -> str:
    """The literature's short column name: recall@5 -> R@5, recall_subset@1 -> Rsub@1, "dress map@10" -> "dress mAP@10"."""
    return " ".join(_short_word(word) for word in name.split(" "))


def _short_word(word: str) -> str:
    for prefix, short in SHORT_PREFIXES:
        if word.startswith(prefix):
            return short + word[len(prefix):]
    return "Avg" if word == "avg" else word


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


def render_report(
    title: str, rows: Rows, caption: str, extra_columns: Sequence[str] = ()
) -> Table:
    """One row per system, one column per metric (the best of several values in bold), then the extra columns."""
    columns = report_columns(rows, extra_columns)
    compared = {c: [r[c] for r in rows.values() if c in r] for c in columns if c not in extra_columns}
    best = {c: max(values) for c, values in compared.items() if len(values) > 1}
    body = {}
    for label, values in rows.items():
        cells = []
        for column in columns:
            if column not in values:
                cells.append(MISSING)
                continue
            text = f"{values[column]:.2f}"
            cells.append(f"[bold]{text}[/]" if best.get(column) == values[column] else text)
        body[label] = cells
    return build_table(title, caption, columns, body, dim=extra_columns)


def report_dict(title: str, rows: Rows, caption: str, **extra: Any) -> dict[str, Any]:
    """The JSON form: title, caption, rows (metric names in percent) and any extra sections."""
    return {"title": title, "caption": caption, "rows": {k: dict(v) for k, v in rows.items()}, **extra}


def write_report_json(path: str | os.PathLike, title: str, rows: Rows, caption: str, **extra: Any) -> Path:
    return write_json(path, report_dict(title, rows, caption, **extra))


def write_report_csv(path: str | os.PathLike, rows: Rows, extra_columns: Sequence[str] = ()) -> Path:
    """One line per row: its label, then every column (empty where a row lacks it)."""
    columns = report_columns(rows, extra_columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["system", *columns])
    for label, values in rows.items():
        writer.writerow([label, *(values.get(c, "") for c in columns)])
    return write_text(path, buffer.getvalue())


def write_report(path_stem: str | os.PathLike, title: str, rows: Rows, caption: str) -> tuple[Path, Path]:
    """The same numbers as `<stem>.json` and `<stem>.csv`, each written atomically."""
    stem = Path(path_stem)
    json_path = write_report_json(stem.with_name(stem.name + ".json"), title, rows, caption)
    csv_path = write_report_csv(stem.with_name(stem.name + ".csv"), rows)
    return json_path, csv_path
