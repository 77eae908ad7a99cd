"""Benchmark readers: CIRR, FashionIQ and CIRCO annotation folders become `Benchmark` objects."""

from .benchmark import BENCHMARK_NAMES, Benchmark, load_benchmark
from .fashioniq import CATEGORIES as FASHIONIQ_CATEGORIES
from .fashioniq import load_fashioniq_categories

__all__ = ["BENCHMARK_NAMES", "FASHIONIQ_CATEGORIES", "Benchmark", "load_benchmark", "load_fashioniq_categories"]
