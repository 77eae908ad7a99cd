"""One prepared GPU check of a full-size model: `python -m cir.bench.gpu_check --out gpu.json`.

Speed and memory do not depend on weight values, so the model holds random weights (`create_model(name)`) and every
input is random. Measured, and written as JSON with the device name:
* gallery encoding, images/s in fp32 and under bfloat16 autocast: stage one's ViT and projection (the dense index's
  vectors), and stage two's own ViT tokens where the model has one (the patch-token cache);
* stage two, ms per query at K candidates (default 50, CIRR's) from cached tokens: the reference's and the candidates'
  ViT tokens are already on the device; each query pays z_t (stage one's text encoder over the reference tokens) and
  the dual encoder over K candidates;
* one training step's seconds and peak GPU memory (`torch.cuda.max_memory_allocated`) at the reference batch sizes
  (REFERENCE_RECIPE.md: stage one 512, stage two 16), under bfloat16 autocast (the reference trains with AMP).
  The steps are written here from the model's own modules, not through cir/train's tasks, which need a prepared
  training set: stage one, ViT frozen, the text encoder, both projections and `temp` train on an in-batch contrastive
  loss (query to target); stage two, both ViTs and stage one frozen, the dual encoder and its head train on the
  B x B score matrix of B triplets (the reference's stage-two loss). AdamW, lr 2e-5, weight decay 0.05. The frozen
  ViTs run in chunks of `--vit-chunk` images (a frozen encoder needs no activations kept, so chunking changes no
  result, only the peak).
A step that runs out of memory is recorded as an error and the others still run. On a CPU only `--tiny` runs (small
batches and K, for the test of this script): its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F

from ..errors import CirError
from ..io import write_json
from ..models import CirModel, create_model

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class CheckSizes:
    """How much work each measurement does."""

    gallery_images: int = 256
    gallery_batch: int = 64
    k: int = 50  # stage-two candidates per query (CIRR's reference value)
    queries: int = 20
    text_tokens: int = 32  # "[ENC] caption [SEP]", a long CIRR caption
    stage1_batch: int = 512
    stage2_batch: int = 16
    vit_chunk: int = 128
    steps: int = 2  # training steps timed after one warm-up step (the optimiser allocates its state there)


TINY = CheckSizes(gallery_images=8, gallery_batch=4, k=5, queries=2, text_tokens=8, stage1_batch=4, stage2_batch=3,
                  vit_chunk=4, steps=1)


def autocast(device: torch.device, precision: str) -> ContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, call: Callable[[], object]) -> float:
    """Wall-clock seconds of `call()`, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def random_pixels(model: CirModel, count: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    size = model.config.vision.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, size, size, generator=generator).to(device)


def random_text(model: CirModel, rows: int, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of `rows` texts of `tokens` tokens: "[ENC] words [SEP]", all real (no padding)."""
    generator = torch.Generator().manual_seed(rows * 1000 + tokens)
    ids = torch.randint(1000, model.tokenizer.base_vocab_size, (rows, tokens), generator=generator)
    ids[:, 0], ids[:, -1] = model.tokenizer.enc_id, model.tokenizer.sep_id
    return ids.to(device), torch.ones_like(ids, device=device)


@torch.no_grad()
def frozen_tokens(encode: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, chunk: int) -> torch.Tensor:
    """ViT tokens of a frozen encoder, `chunk` images at a time."""
    return torch.cat([encode(pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)])


@torch.no_grad()
def gallery_encoding(model: CirModel, sizes: CheckSizes, device: torch.device, precision: str) -> dict[str, float]:
    """Images/s of stage one's gallery vectors, of stage two's own ViT tokens (if any), and of both together."""
    pixels = random_pixels(model, sizes.gallery_images, device)
    batches = [pixels[i:i + sizes.gallery_batch] for i in range(0, len(pixels), sizes.gallery_batch)]

    def stage1() -> None:
        for batch in batches:
            model.stage1.image_embedding(model.stage1.image_tokens(batch))

    def stage2() -> None:
        for batch in batches:
            model.stage2.image_tokens(batch)

    with autocast(device, precision):
        stage1()  # warm-up: kernels, allocator
        seconds = {"stage1": timed(device, stage1)}
        if model.stage2 is not None and not model.config.share_stage2_vision:
            stage2()
            seconds["stage2_tokens"] = timed(device, stage2)
    result = {f"{name}_images_per_s": sizes.gallery_images / s for name, s in seconds.items()}
    result["gallery_images_per_s"] = sizes.gallery_images / sum(seconds.values())
    return result


@torch.no_grad()
def stage_two_latency(model: CirModel, sizes: CheckSizes, device: torch.device, precision: str) -> dict[str, float]:
    """ms per query: z_t from the cached reference tokens, then the dual encoder over K cached candidates."""
    if model.stage2 is None:
        raise CirError(f"model {model.name!r} was built without stage two")
    encode = model.stage2_image_tokens
    cand_tokens = frozen_tokens(encode, random_pixels(model, sizes.k, device, seed=1), sizes.vit_chunk)
    ref_tokens = frozen_tokens(encode, random_pixels(model, sizes.queries, device, seed=2), sizes.vit_chunk)
    ids, mask = random_text(model, 1, sizes.text_tokens, device)

    def query(row: int) -> None:
        ref = ref_tokens[row:row + 1]
        z_t = model.stage1.fuse(ref, ids, mask)
        model.stage2.score(z_t, ids, mask, cand_tokens, ref)

    with autocast(device, precision):
        query(0)
        seconds = [timed(device, lambda row=row: query(row)) for row in range(sizes.queries)]
    ordered = sorted(seconds)
    return {"ms_per_query_median": 1000 * ordered[len(ordered) // 2], "ms_per_query_mean": 1000 * sum(seconds) / len(seconds)}


def frozen_vit(model: CirModel, encode: Callable[[torch.Tensor], torch.Tensor], count: int, sizes: CheckSizes,
               device: torch.device, seed: int, cached: bool) -> Callable[[], torch.Tensor]:
    """Per step, the frozen ViT's tokens of `count` images: run on random pixels every step, or (`cached`, as cir's
    training reads them from the feature cache) one tensor of random tokens of the ViT's shape, made once."""
    if cached:
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randn(count, model.config.vision.num_tokens, model.config.vision.width, generator=generator)
        tokens = tokens.to(device)
        return lambda: tokens
    pixels = random_pixels(model, count, device, seed=seed)
    return lambda: frozen_tokens(encode, pixels, sizes.vit_chunk)


def stage_one_step(model: CirModel, sizes: CheckSizes, device: torch.device, cached: bool = False,
                   precision: str = "bf16") -> Callable[[], float]:
    """One stage-one training step (returns the loss): frozen ViT, contrastive loss query -> target."""
    stage1, batch = model.stage1, sizes.stage1_batch
    stage1.train()
    stage1.visual_encoder.requires_grad_(False)
    stage1.visual_encoder.eval()
    trained = [p for p in stage1.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=2e-5, weight_decay=0.05)
    refs = frozen_vit(model, stage1.image_tokens, batch, sizes, device, 3, cached)
    targets = frozen_vit(model, stage1.image_tokens, batch, sizes, device, 4, cached)
    ids, mask = random_text(model, batch, sizes.text_tokens, device)
    labels = torch.arange(batch, device=device)

    def step() -> float:
        with autocast(device, precision):
            ref_tokens, target_cls = refs(), targets()
            queries = stage1.query_embedding(stage1.fuse(ref_tokens, ids, mask))
            candidates = stage1.image_embedding(target_cls)
            loss = F.cross_entropy(queries @ candidates.T / stage1.temp, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def stage_two_step(model: CirModel, sizes: CheckSizes, device: torch.device, cached: bool = False,
                   precision: str = "bf16") -> Callable[[], float]:
    """One stage-two training step (returns the loss): B triplets, every query scored against every target."""
    if model.stage2 is None:
        raise CirError(f"model {model.name!r} was built without stage two")
    stage1, stage2, batch = model.stage1, model.stage2, sizes.stage2_batch
    stage1.eval().requires_grad_(False)
    stage2.train()
    if not model.config.share_stage2_vision:
        stage2.visual_encoder.requires_grad_(False)
        stage2.visual_encoder.eval()
    trained = [p for p in stage2.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=2e-5, weight_decay=0.05)
    refs = frozen_vit(model, model.stage2_image_tokens, batch, sizes, device, 5, cached)
    targets = frozen_vit(model, model.stage2_image_tokens, batch, sizes, device, 6, cached)
    ids, mask = random_text(model, batch, sizes.text_tokens, device)
    labels = torch.arange(batch, device=device)
    query_rows = torch.arange(batch, device=device).repeat_interleave(batch)  # pair (i, j): query i, target j
    target_rows = torch.arange(batch, device=device).repeat(batch)

    def step() -> float:
        with autocast(device, precision):
            ref_tokens, cand_tokens = refs(), targets()
            with torch.no_grad():
                z_t = stage1.fuse(ref_tokens, ids, mask)
            scores = stage2.score(z_t[query_rows], ids[query_rows], mask[query_rows], cand_tokens[target_rows],
                                  ref_tokens[query_rows])
            loss = F.cross_entropy(scores.view(batch, batch).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def training_step(make_step: Callable[[], Callable[[], float]], batch: int, sizes: CheckSizes,
                  device: torch.device) -> dict[str, Any]:
    """Seconds of one step (the fastest of `sizes.steps` after a warm-up) and the peak memory over the timed steps."""
    step = make_step()
    step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = [timed(device, step) for _ in range(sizes.steps)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"batch": batch, "precision": "bf16 autocast", "step_seconds": min(seconds),
            "peak_memory_gib": peak / 2**30 if peak is not None else None}


def guarded(name: str, call: Callable[[], dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """`call()`, or {"error": ...} when it runs out of memory (the other measurements still run)."""
    try:
        return call()
    except torch.OutOfMemoryError as exc:
        log.warning("%s: out of memory", name)
        return {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..machine import machine_description

    return machine_description()


def run_check(model_name: str, sizes: CheckSizes, device: torch.device, tiny: bool) -> dict[str, Any]:
    """Every measurement of the module docstring, as one JSON-ready dict."""
    import transformers

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the golden README's advice)
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    start = time.perf_counter()
    model = create_model(model_name, device=device)
    result: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "model": model_name,
        "weights": "random",
        "tiny": tiny,
        "image_size": model.config.vision.image_size,
        "parameters": model.num_parameters(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tf32": False if device.type == "cuda" else None,
        "sizes": asdict(sizes),
        "gallery_encoding": {},
        "stage_two": {"k": sizes.k, "text_tokens": sizes.text_tokens},
    }
    model.eval()
    for precision in PRECISIONS:
        log.info("gallery encoding, %s", precision)
        result["gallery_encoding"][precision] = guarded(
            "gallery", lambda: gallery_encoding(model, sizes, device, precision), device)
        log.info("stage two at K = %d, %s", sizes.k, precision)
        result["stage_two"][precision] = guarded(
            "stage two", lambda: stage_two_latency(model, sizes, device, precision), device)
    log.info("stage-one training step, batch %d", sizes.stage1_batch)
    result["train_stage1"] = guarded("stage-one step", lambda: training_step(
        lambda: stage_one_step(model, sizes, device), sizes.stage1_batch, sizes, device), device)
    log.info("stage-two training step, batch %d", sizes.stage2_batch)
    result["train_stage2"] = guarded("stage-two step", lambda: training_step(
        lambda: stage_two_step(model, sizes, device), sizes.stage2_batch, sizes, device), device)
    result["total_seconds"] = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cir.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--model", default="blip-base", help="registered model name (random weights)")
    parser.add_argument("--tiny", action="store_true", help="small batches and K: the CPU test of this script")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--k", type=int, help="stage-two candidates per query (default 50)")
    parser.add_argument("--stage1-batch", type=int, help="stage-one training batch (default 512)")
    parser.add_argument("--stage2-batch", type=int, help="stage-two training batch (default 16)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("gpu_check: no GPU here; on a CPU only the test size runs: --model blip-golden --tiny")
    sizes = TINY if args.tiny else CheckSizes()
    overrides = {"k": args.k, "stage1_batch": args.stage1_batch, "stage2_batch": args.stage2_batch}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if any(value < 1 for value in overrides.values()):
        parser.error("--k, --stage1-batch and --stage2-batch must be positive")
    sizes = CheckSizes(**{**asdict(sizes), **overrides})
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    result = run_check(args.model, sizes, device, args.tiny)
    write_json(args.out, result)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
