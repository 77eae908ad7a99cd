"""Benchmark protocols: run validation, metrics, significance, test-server files and reports."""

from .metrics import parse_metric, query_scores, summarize_categories
from .report import render_report, write_report
from .significance import Comparison, compare_runs
from .submission import build_submission, check_submission_file, write_submission
from .validate import validate_run

__all__ = [
    "Comparison",
    "build_submission",
    "check_submission_file",
    "compare_runs",
    "parse_metric",
    "query_scores",
    "render_report",
    "summarize_categories",
    "validate_run",
    "write_report",
    "write_submission",
]
