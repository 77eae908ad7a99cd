"""How long `cir eval` takes to encode a gallery with a full-size model here: `python -m cir.bench.encode_timing --images 32`.

Speed does not depend on weight values, so the model holds random weights and no download is needed. N random
images are written to a temporary folder and indexed through the stages `cir eval` builds from a config (stage one:
ViT tokens and embeddings, into the feature cache and the dense index; stage two: its own ViT's tokens, as in the
reference wiring), once in fp32 and once under bfloat16 autocast, each into a fresh cache after a one-image warm-up.
The rate is extrapolated to a gallery size (default: the 2,297 images of the CIRR val split).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import Config
from ..io import write_json
from ..types import Gallery
from ..models import CirModel, build_model
from ..models import get_model_config

log = logging.getLogger(__name__)

CIRR_VAL_GALLERY = 2297
PRECISIONS = {"fp32": False, "bf16": True}


@dataclass
class EncodeTiming:
    """Seconds spent indexing `images` gallery images, per pipeline stage, at one precision."""

    precision: str
    images: int
    stage_seconds: dict[str, float]

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())

    @property
    def images_per_second(self) -> float:
        """Gallery images fully indexed (every stage) per second."""
        return self.images / self.seconds

    def extrapolate(self, gallery_size: int) -> float:
        """Seconds to index `gallery_size` images at the measured rate."""
        return gallery_size / self.images_per_second

    def to_dict(self, gallery_size: int) -> dict:
        return {
            "precision": self.precision,
            "images": self.images,
            "stage_seconds": self.stage_seconds,
            "images_per_second": self.images_per_second,
            "extrapolated_seconds": self.extrapolate(gallery_size),
            "extrapolated_to_images": gallery_size,
        }


def random_gallery(folder: Path, count: int, size: int, seed: int = 0) -> Gallery:
    """`count` random RGB PNG images of `size` x `size` pixels written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"random-{index:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return Gallery.from_paths(paths, name=folder.name)


def pipeline_config(model_name: str, cache_dir: Path, batch_size: int, device: str, autocast_bf16: bool) -> Config:
    """A run config like configs/cirr-blip.yaml (dense stage one, dual-encoder stage two) for a random-weight model."""
    return Config.from_dict(
        {
            "model": {"name": model_name, "pretrained": None, "device": device, "autocast_bf16": autocast_bf16},
            "stage_one": {"kind": "dense", "index": "flat", "batch_size": batch_size},
            "stage_two": {"kind": "dual-encoder", "stage1_weight": 0.0, "batch_size": batch_size},
            "cache_dir": str(cache_dir),
        },
        source="timing",
    )


def time_gallery_encoding(
    model: CirModel, gallery: Gallery, warmup: Gallery, precision: str, batch_size: int, device: str, work_dir: Path
) -> EncodeTiming:
    """Index `gallery` (after `warmup`) through a fresh `cir eval` pipeline and cache, timing each stage."""
    from ..experiment import build_pipeline

    cfg = pipeline_config(model.name, work_dir / f"cache-{precision}", batch_size, device, PRECISIONS[precision])
    model.autocast_bf16 = cfg.model.autocast_bf16  # the precision the stages run at is the model's
    pipeline = build_pipeline(cfg, model=model)
    stages = {"stage1": pipeline.retriever, "stage2": pipeline.reranker}
    seconds: dict[str, float] = {}
    for name, stage in stages.items():
        if stage is None:
            continue
        stage.index(warmup)
        start = time.perf_counter()
        stage.index(gallery)
        seconds[name] = time.perf_counter() - start
        log.info("%s %s: %d images in %.1f s", precision, name, len(gallery), seconds[name])
    return EncodeTiming(precision, len(gallery), seconds)


def measure(
    model_name: str = "blip-base",
    images: int = 32,
    batch_size: int = 16,
    precisions: tuple[str, ...] = tuple(PRECISIONS),
    device: str = "cpu",
    seed: int = 0,
) -> list[EncodeTiming]:
    """Build `model_name` with random weights and time gallery indexing of `images` random images per precision."""
    torch.manual_seed(seed)
    config = get_model_config(model_name)
    start = time.perf_counter()
    model = build_model(config).eval().to(device)
    log.info("built %s with random weights in %.1f s", model_name, time.perf_counter() - start)
    size = config.vision.image_size
    with tempfile.TemporaryDirectory(prefix="cir-timing-") as tmp:
        work_dir = Path(tmp)
        gallery = random_gallery(work_dir / "gallery", images, size, seed)
        warmup = random_gallery(work_dir / "warmup", 1, size, seed + 1)
        return [
            time_gallery_encoding(model, gallery, warmup, precision, batch_size, device, work_dir)
            for precision in precisions
        ]


def render(timings: list[EncodeTiming], gallery_size: int, caption: str):
    """A rich table: per precision, seconds per stage, images/s and the extrapolated gallery time."""
    from rich.table import Table

    stages = sorted({name for timing in timings for name in timing.stage_seconds})
    table = Table(title=f"gallery encoding, extrapolated to {gallery_size:,} images", caption=caption)
    table.add_column("precision")
    for name in stages:
        table.add_column(f"{name} s", justify="right")
    table.add_column("images/s", justify="right")
    table.add_column(f"{gallery_size:,} images", justify="right")
    for timing in timings:
        per_stage = [f"{timing.stage_seconds[name]:.1f}" if name in timing.stage_seconds else "-" for name in stages]
        table.add_row(
            timing.precision, *per_stage, f"{timing.images_per_second:.2f}", duration(timing.extrapolate(gallery_size))
        )
    return table


def duration(seconds: float) -> str:
    """e.g. "1 h 07 min", "12 min 30 s", "45 s"."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cir.bench.encode_timing", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blip-base", help="registered model name (random weights)")
    parser.add_argument("--images", type=int, default=32, help="random images to encode (N)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per ViT batch (the configs use 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--precision", choices=[*PRECISIONS, "both"], default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gallery-size", type=int, default=CIRR_VAL_GALLERY, help="extrapolate to this many images")
    parser.add_argument("--out", type=Path, help="also write the measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch_size < 1 or args.threads < 1:
        parser.error("--images, --batch-size and --threads must be positive")

    from rich.console import Console

    from ..machine import machine_description

    logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)  # each stage's time as soon as it is known
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    precisions = tuple(PRECISIONS) if args.precision == "both" else (args.precision,)
    timings = measure(args.model, args.images, args.batch_size, precisions, args.device)
    image_size = get_model_config(args.model).vision.image_size
    caption = (
        f"{args.model}, random weights; extrapolated from {args.images} random {image_size} px images in batches of "
        f"{args.batch_size}; {machine_description()}; load average before the run {load:.1f}"
    )
    Console().print(render(timings, args.gallery_size, caption))
    if args.out:
        write_json(args.out, {"caption": caption, "timings": [t.to_dict(args.gallery_size) for t in timings]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
