"""`cir bench`: measured speed, memory and scale of every stage, side by side, in one run.

    from cir.bench import BenchSettings, run_bench
    result = run_bench(BenchSettings(scales=(10_000,), queries=50))
"""

from .report import markdown_report, print_result, write_result
from .runner import SECTIONS, BenchSettings, parse_scale, run_bench
from .scaling import PowerLaw, fit_power_law

__all__ = ["SECTIONS", "BenchSettings", "PowerLaw", "fit_power_law", "markdown_report", "parse_scale", "print_result",
           "run_bench", "write_result"]
