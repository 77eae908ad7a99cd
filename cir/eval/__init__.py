"""Benchmark protocols: run validation, metrics, significance, test-server files and reports.

`evaluate(benchmark, run)` is the one scoring path: it validates the run and returns the split's metrics in percent;
`per_query_scores` gives the per-query values behind them, `validate_run` only checks.
"""

from .metrics import evaluate, parse_metric, per_query_scores, query_scores, summarize_categories
from .report import Report, render_report, write_report
from .significance import Comparison, compare_runs
from .submission import build_submission, check_submission_file, write_submission
from .validate import validate_run

__all__ = [
    "Comparison",
    "Report",
    "build_submission",
    "check_submission_file",
    "compare_runs",
    "evaluate",
    "parse_metric",
    "per_query_scores",
    "query_scores",
    "render_report",
    "summarize_categories",
    "validate_run",
    "write_report",
    "write_submission",
]
