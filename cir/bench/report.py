"""The benchmark's result as tables: rich for the terminal, Markdown for the README (same cells), JSON as is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..io import write_json, write_text
from .scaling import SCALED_COSTS

MISSING = "–"
LABEL_WIDTH = 24  # the first column wraps beyond this (long labels: an index that was not measured says why)
UNCROPPED_WIDTH = 160


@dataclass
class BenchTable:
    """One table of pre-formatted cells: the first column names the row, the others are right-aligned numbers."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


def _number(value: float | None, digits: int = 2) -> str:
    """A measurement with `digits` significant decimals for small values and none for large ones."""
    if value is None:
        return MISSING
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2g}x" if abs(value) < 0.1 else f"{_number(value)}x"


def _megabytes(value: int | None) -> str:
    return MISSING if value is None else _number(value / 1e6)


def _images(n: int) -> str:
    return f"{n:,}"


def _stage_one_rows(section: dict[str, Any], cells: Callable[[dict[str, Any]], list[str]], width: int) -> list[list[str]]:
    """One row per measured index (method, images, then `cells`); an index not measured says why."""
    rows = []
    for r in section["rows"]:
        if r["status"] == "ok":
            rows.append([r["method"], _images(r["images"])] + cells(r))
        else:
            rows.append([f"{r['method']}: {r['status']}", _images(r["images"])] + [MISSING] * width)
    return rows


def stage_one_tables(section: dict[str, Any]) -> list[BenchTable]:
    """Stage one's speed, then its size, build time and recall: two tables narrow enough for a terminal."""
    speed_columns = ["p50 ms", "p95 ms", "QPS", "vs flat", "QPS batch", "vs flat"]
    speed = _stage_one_rows(section, lambda r: [
        _number(r["single_p50_ms"]), _number(r["single_p95_ms"]), _number(r["single_qps"]), _ratio(r.get("speedup_single")),
        _number(r["batch_qps"]), _ratio(r.get("speedup_batch"))], len(speed_columns))
    size_columns = ["build s", "index MB", "vs flat", f"recall@{section['k']}", "FLOPs/pair"]
    size = _stage_one_rows(section, lambda r: [
        _number(r["build_s"]), _megabytes(r["index_bytes"]), _ratio(r.get("size_ratio")), f"{r['recall']:.3f}",
        _number(r["flops_per_pair"])], len(size_columns))
    speed_caption = (f"{section['queries']} queries, k={section['k']}. p50 / p95 / QPS: one query at a time on 1 thread; "
                     f"batch: all queries in one call on {section['threads']} thread(s). vs flat: queries per second "
                     "over exact dense search (dense flat) at the same size.")
    sampled = [f"{r['method']} at {_images(r['images'])}: {r['single_queries_timed']}" for r in section["rows"]
               if r["status"] == "ok" and r.get("single_queries_timed", section["queries"]) < section["queries"]]
    if sampled:
        speed_caption += (" One-query timings stop after a minute (at least 10 queries): queries timed for "
                          + "; ".join(sampled) + ".")
    size_caption = ("recall@k against the exact index of the family (dense: flat, sparse: csr). index MB: memory of the "
                    "structure; Milvus: its milvus-lite database folder on disk (build s includes the inserts). "
                    "vs flat: index bytes over dense flat's. FLOPs/pair: multiply-adds per query-image pair (sparse: expected, from the "
                    "terms' document frequencies; two-pass: its first terms' postings plus one per lookup of the "
                    "others; Seismic: before its pruning).")
    tables = [BenchTable("Stage one: search speed", ["method", "images"] + speed_columns, speed, speed_caption),
              BenchTable("Stage one: index size, build time, recall", ["method", "images"] + size_columns, size, size_caption)]
    if any(r.get("op_param") for r in section["rows"] if r["status"] == "ok"):
        tables.append(operating_point_table(section))
    return tables


def _setting(value: Any) -> str:
    return "/".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def operating_point_table(section: dict[str, Any]) -> BenchTable:
    """Each approximate index at its cheapest search setting with recall@k >= 0.99 of exact search."""
    rows = []
    for r in section["rows"]:
        if r["status"] != "ok" or not r.get("op_param"):
            continue
        if r.get("op_value") is None:
            rows.append([r["method"], _images(r["images"]), r["op_param"], r["op_note"]] + [MISSING] * 3)
            continue
        rows.append([r["method"], _images(r["images"]), r["op_param"], _setting(r["op_value"]), f"{r['op_recall']:.3f}",
                     _number(r["op_single_p50_ms"]), _number(r["op_batch_qps"])])
    k = section["k"]
    caption = (f"The cheapest value of each approximate index's search parameter (swept cheapest first) whose "
               f"recall@{k} against the exact index of its family is at least 0.99, and its one-query p50 (1 thread) "
               f"and batched queries per second ({section['threads']} thread(s)) there: indexes compared at equal "
               "recall. Exact searches (flat, csr, Milvus FLAT and sparse inverted index) have no parameter.")
    columns = ["parameter", "value", f"recall@{k}", "p50 ms", "QPS batch"]
    return BenchTable(f"Stage one at recall@{k} >= 0.99", ["method", "images"] + columns, rows, caption)


def scaling_table(section: dict[str, Any]) -> BenchTable:
    exponents: dict[str, dict[str, float]] = {}
    sizes: dict[str, list[int]] = {}
    for fit in section["scaling"]:
        exponents.setdefault(fit["method"], {})[fit["cost"]] = fit["exponent"]
        sizes[fit["method"]] = [n for n, _ in fit["points"]]
    rows = [[method, f"{_images(min(sizes[method]))} to {_images(max(sizes[method]))}"]
            + [_number(costs.get(cost)) for cost in SCALED_COSTS] for method, costs in exponents.items()]
    caption = ("Exponent b of a least-squares fit of cost ~ n^b on log-log axes over the stage-one sizes (1: linear; "
               "0: flat); the points are the stage-one rows.")
    return BenchTable("How stage-one costs grow with gallery size", ["method", "images"] + list(SCALED_COSTS.values()), rows, caption)


def stage_two_table(section: dict[str, Any]) -> BenchTable:
    rows = [[str(r["candidates"]), _number(r["cached_p50_ms"]), _number(r["cached_p95_ms"]), _number(r["cached_mean_ms"]),
             _number(r["encoded_p50_ms"]), _number(r["encoded_p95_ms"]), _number(r["encoded_mean_ms"]),
             _ratio(r["encoded_over_cached"])] for r in section["rows"]]
    check = section["requirement"]
    if check["met"] is None:
        verdict = check["note"]
    else:
        verdict = (f"{check['candidates']} candidates from cached tokens: {check['measured_ms']:.1f} ms per query "
                   f"(limit {check['limit_ms']:.0f} ms, {check['threads']} thread(s)): {'met' if check['met'] else 'NOT met'}")
    caption = (f"{section['queries']} queries, {section['threads']} thread(s), ms per query. Encoded: the K candidate "
               f"images are preprocessed and run through the ViT inside each query (decoded beforehand). Cached "
               f"patch tokens take {section['token_bytes_per_image'] / 1e3:.1f} kB per gallery image "
               f"({section['token_bytes_per_image'] / 1e3:.1f} GB per million images). {verdict}.")
    columns = ["cached p50", "cached p95", "cached mean", "encoded p50", "encoded p95", "encoded mean", "encoded / cached"]
    return BenchTable("Stage two: reranking K candidates", ["K"] + columns, rows, caption)


def end_to_end_table(section: dict[str, Any]) -> BenchTable:
    rows = [[r["pipeline"], _images(r["gallery"]), _number(r["stage1_p50_ms"]), _number(r["stage1_p95_ms"]),
             _number(r["stage2_p50_ms"]), _number(r["stage2_p95_ms"]), _number(r["total_p50_ms"]),
             _number(r["total_p95_ms"]), _megabytes(r["peak_rss_bytes"]), _megabytes(r["python_peak_bytes"])]
            for r in section["rows"]]
    encoding = section["encoding"]
    caption = (f"{section['benchmark']}, {section['queries']} queries one at a time, ms per query. Peak RSS: the "
               f"process's peak so far (getrusage); Python peak: traced allocations over indexing and the first "
               f"{section['traced_queries']} queries. Gallery encoding ({encoding['what']}, towers "
               f"{', '.join(encoding['towers'])}): {encoding['images_per_second']:.0f} images/s over {encoding['images']:,} images.")
    columns = ["gallery", "stage 1 p50", "stage 1 p95", "stage 2 p50", "stage 2 p95", "total p50", "total p95",
               "peak RSS MB", "Python peak MB"]
    return BenchTable("End to end", ["pipeline"] + columns, rows, caption)


def result_tables(result: dict[str, Any]) -> list[BenchTable]:
    """The tables of every section that ran, in report order."""
    tables = []
    stage_one = result.get("stage_one", {})
    if "rows" in stage_one:
        tables += stage_one_tables(stage_one)
        if stage_one["scaling"]:
            tables.append(scaling_table(stage_one))
    if "rows" in result.get("stage_two", {}):
        tables.append(stage_two_table(result["stage_two"]))
    if "rows" in result.get("end_to_end", {}):
        tables.append(end_to_end_table(result["end_to_end"]))
    return tables


def notes(result: dict[str, Any]) -> list[str]:
    """Where the numbers come from: the machine, the model's weights, the data, how vectors were made, what was skipped."""
    lines = [f"machine: {result['machine']}", f"model: {result['model']['model']}, {result['model']['weights']}",
             f"data: {result['model']['data']}"]
    for family, source in result.get("vectors", {}).items():
        lines.append(f"{family} vectors: {source['text']}; queries: {source['queries']}")
    for key in ("stage_one", "stage_two", "end_to_end"):
        if "skipped" in result.get(key, {}):
            lines.append(f"{key.replace('_', ' ')} skipped: {result[key]['skipped']}")
    return lines


def to_rich(table: BenchTable) -> Table:
    """A rich table whose number columns never shrink below their widest cell (headers wrap instead)."""
    out = Table(title=table.title, caption=table.caption, caption_justify="left")
    widest_label = max((len(row[0]) for row in table.rows), default=1)
    out.add_column(table.columns[0], min_width=min(widest_label, LABEL_WIDTH), max_width=LABEL_WIDTH)
    for i, column in enumerate(table.columns[1:], start=1):
        out.add_column(column, justify="right", min_width=max((len(row[i]) for row in table.rows), default=1))
    for row in table.rows:
        out.add_row(*row)
    return out


def print_result(result: dict[str, Any], console: Console) -> None:
    """The tables and notes; written to a file or a pipe (no terminal width), lines are not cut at 80 columns."""
    if not console.is_terminal:
        console = Console(file=console.file, width=UNCROPPED_WIDTH)
    console.print(Text(result["title"], style="bold"))
    for table in result_tables(result):
        console.print(to_rich(table))
    console.print(Group(*(Text(line) for line in notes(result))))


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: BenchTable) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(map(_markdown_cell, table.columns)) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * (len(table.columns) - 1)) + "|"]
    lines += ["| " + " | ".join(map(_markdown_cell, row)) + " |" for row in table.rows]
    if table.caption:
        lines += ["", table.caption]
    return "\n".join(lines)


def markdown_report(result: dict[str, Any]) -> str:
    """The tables as Markdown, headed by the run's title and followed by its notes: the README's performance section."""
    parts = [f"*{result['title']}*"] + [to_markdown(t) for t in result_tables(result)]
    parts.append("\n".join(f"- {line}" for line in notes(result)))
    return "\n\n".join(parts) + "\n"


def write_result(result: dict[str, Any], json_path: str | os.PathLike | None, markdown_path: str | os.PathLike | None) -> list[Path]:
    """Write the JSON and / or Markdown files asked for (atomically); return their paths."""
    written = []
    if json_path:
        written.append(write_json(json_path, result))
    if markdown_path:
        written.append(write_text(markdown_path, markdown_report(result)))
    return written
