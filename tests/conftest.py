"""Shared fixtures: the shared data folder (/work/shared) beside the repository, which tests need and never skip."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
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


@dataclass
class LiveServer:
    """A `cir serve` process on a free loopback port, and what it serves."""

    url: str
    config: Path
    process: "subprocess.Popen"
    log: Path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(synth_tiny: Path, tmp_path_factory: pytest.TempPathFactory):
    """`cir serve` for real (uvicorn), on the tiny synthetic val split with the shipped model and the sparse stage
    one (so results carry terms); stopped with SIGTERM at the end, which must shut it down cleanly."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    work = tmp_path_factory.mktemp("serve")
    config = work / "serve.yaml"
    config.write_text(
        f"benchmark: {{name: cirr, release: synth, root: {synth_tiny}, split: val}}\n"
        "model: {name: blip-tiny, pretrained: synth}\n"
        "stage_one: {kind: sparse, k: 20}\n"
        f"cache_dir: {work / 'cache'}\n"
    )
    port = free_port()
    log = work / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "cir", "serve", "--config", str(config), "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"cir serve did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    server = LiveServer(url, config, process, log)
    yield server
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("cir serve did not stop within 30 s of SIGTERM")
    assert code == 0, log.read_text()[-2000:]
    assert "shut down" in log.read_text()


def write_fashioniq_tree(
    source: Path, root: Path, train_queries: int, val_queries: int, size: int = 24, images: int | None = None
) -> Path:
    """A FashionIQ folder with the real train and val captions (the first `*_queries` of each category), split files
    listing exactly the images they name, and small generated placeholder images (a colour per image).

    `images`: rename the images the train captions name onto at most this many distinct ones (the captions stay
    real; two queries may then share a picture), so trees of equal query counts differ only in their images."""
    import json
    import zlib

    import numpy as np
    from PIL import Image

    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    written: set[str] = set()
    for split, count in (("train", train_queries), ("val", val_queries)):
        for category in ("dress", "shirt", "toptee"):
            entries = json.loads((source / "captions" / f"cap.{category}.{split}.json").read_text())[:count]
            if images is not None and split == "train":
                pool = list(dict.fromkeys(n for e in entries for n in (e["candidate"], e["target"])))[:images]
                rename = lambda n: n if n in pool else pool[zlib.crc32(n.encode()) % len(pool)]  # noqa: E731
                entries = [{**e, "candidate": rename(e["candidate"]), "target": rename(e["target"])} for e in entries]
            names = list(dict.fromkeys(n for e in entries for n in (e["candidate"], e["target"])))
            (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(entries))
            (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(names))
            for name in names:
                if name not in written:
                    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                    Image.new("RGB", (size, size), colour).save(root / "images" / f"{name}.png")
                    written.add(name)
    return root


@pytest.fixture(scope="session")
def fashioniq_tree(benchmarks_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FashionIQ tree: 100 train and 30 val queries per category with the real captions, placeholder images."""
    return write_fashioniq_tree(benchmarks_dir / "fashioniq", tmp_path_factory.mktemp("fiq") / "fashioniq", 100, 30)
