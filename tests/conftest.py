"""Shared fixtures: the shared data folder (/work/shared) beside the repository, which tests need and never skip."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared relative to the repository: benchmarks, golden fixtures, assets. Missing is a failure, not a skip."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared data folder not found: {SHARED_DIR} (the tests need the real files there)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def benchmarks_dir(shared_dir: Path) -> Path:
    """The real annotation folders: cirr/, fashioniq/, circo/."""
    path = shared_dir / "benchmarks"
    if not path.is_dir():
        pytest.fail(f"benchmark annotations not found: {path}")
    return path


@pytest.fixture(scope="session")
def cirr_val(benchmarks_dir: Path):
    from cir.data import load_benchmark

    return load_benchmark("cirr", benchmarks_dir / "cirr", "val")


@pytest.fixture(scope="session")
def cirr_test1(benchmarks_dir: Path):
    from cir.data import load_benchmark

    return load_benchmark("cirr", benchmarks_dir / "cirr", "test1")


@pytest.fixture(scope="session")
def fashioniq_val(benchmarks_dir: Path):
    """The three FashionIQ val category benchmarks, by category."""
    from cir.data import load_fashioniq_categories

    return load_fashioniq_categories(benchmarks_dir / "fashioniq", "val")


@pytest.fixture(scope="session")
def circo_val(benchmarks_dir: Path):
    from cir.data import load_benchmark

    return load_benchmark("circo", benchmarks_dir / "circo", "val")


@pytest.fixture(scope="session")
def circo_test(benchmarks_dir: Path):
    from cir.data import load_benchmark

    return load_benchmark("circo", benchmarks_dir / "circo", "test")


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic benchmark (CIRR layout, release "synth"), generated once per test session."""
    from cir.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "tiny", seed=0, size="tiny", workers=2)


@pytest.fixture(scope="session")
def tiny_model():
    """blip-tiny with random weights (seeded): enough to exercise every code path, not to rank well."""
    import torch

    from cir.models import create_model

    torch.manual_seed(0)
    return create_model("blip-tiny", stages=("stage1", "stage2"))
