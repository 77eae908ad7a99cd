"""The memory a training config's steps need, measured on the machine at hand (a CPU where no GPU is lent):
`python -m cir.bench.train_memory --config configs/cirr-blip-train.yaml --out runs/train-memory-cirr.json`.

Per stage of the config (`train_stage1`, `train_stage2`): the config's model with random weights (memory does not
depend on weight values; stage one alone for stage one, both stages for stage two, as `cir train` builds them), its frozen ViT's tokens as cir's training reads them from the feature cache (random
tokens of the ViT's shape), and `--steps` optimiser steps (AdamW, its state included) at the config's per-process
batch (`batch_size`; `accumulate` micro-batches add no memory) under its precision's autocast. Stage one: the
contrastive step of `gpu_check` on a batch of queries; stage two: the `group_size` x `group_size` score matrix of
`gpu_check`'s stage-two step (the reference's B x B loss).

Measured: on a CPU the peak resident memory of the steps (a peak window opened before the model is built, so the
figure is the model, its gradients and optimiser state, the activations and the batch's tokens, beyond the
libraries already loaded; hence a process of its own, as this command runs: heap pages a process freed before
would be reused without the resident memory growing); on a GPU `torch.cuda.max_memory_allocated` over the steps. A CPU figure is the size of
the same tensors, not a GPU reading: a GPU adds its CUDA context and its caching allocator's slack, and CPU
autocast keeps a few more ops in float32 than CUDA's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import CirError
from ..io import write_json
from ..machine import machine_description, peak_rss_bytes, reset_peak_rss, resident_bytes
from ..models import create_model
from .gpu_check import CheckSizes, stage_one_step, stage_two_step, synchronize

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2")


def measure_stage(model_name: str, stage: str, batch: int, precision: str, steps: int, sizes: CheckSizes,
                  device: torch.device) -> dict[str, Any]:
    """Peak memory (bytes) and seconds of `steps` training steps of `stage` at `batch`, the model built inside the
    measured window."""
    if precision not in ("fp32", "bf16"):
        raise CirError(f"train_memory: precision {precision!r} is not measured here (fp32 or bf16)")
    sizes = replace(sizes, stage1_batch=batch) if stage == "stage1" else replace(sizes, stage2_batch=batch)
    before = resident_bytes()
    windowed = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = create_model(model_name, stages=STAGES[: STAGES.index(stage) + 1], device=device)  # as cir train builds it
    make = stage_one_step if stage == "stage1" else stage_two_step
    step = make(model, sizes, device, cached=True, precision=precision)
    seconds = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    out: dict[str, Any] = {"batch": batch, "pairs": batch * batch if stage == "stage2" else batch, "precision": precision,
                           "steps": steps, "step_seconds": seconds, "parameters": model.num_parameters(),
                           "trained_parameters": _trained_parameters(getattr(model, stage))}
    if device.type == "cuda":
        out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
    elif windowed:
        out["peak_bytes"] = max(0, peak_rss_bytes() - before)
        out["peak_what"] = "peak resident memory of the steps beyond the libraries loaded before the model was built"
    else:
        out["peak_bytes"] = None
        out["peak_what"] = "not measured: this system cannot reset its peak resident memory"
    del model, step
    return out


def _trained_parameters(module: torch.nn.Module) -> int:
    """Parameters of the trained stage that the step trains (its frozen ViT left out)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def measure_config(path: Path, stages: tuple[str, ...], steps: int, device: torch.device,
                   batch: int | None = None) -> dict[str, Any]:
    """Every stage of the config at its own batch (or `batch`) and precision, as one JSON-ready dict."""
    cfg = Config.load(path)
    result: dict[str, Any] = {"config": str(path), "model": cfg.model.name, "weights": "random",
                              "device": device.type, "machine": machine_description(), "stages": {}}
    sizes = CheckSizes()
    for stage in stages:
        train = getattr(cfg, f"train_{stage}")
        configured = int(train.options.get("group_size", train.batch_size)) if stage == "stage2" else train.batch_size
        used = batch or configured
        log.info("%s of %s: %d steps at batch %d, %s", stage, path, steps, used, train.precision)
        result["stages"][stage] = measure_stage(cfg.model.name, stage, used, train.precision, steps, sizes, device)
        result["stages"][stage].update(accumulate=train.accumulate, config_batch=configured)
    result["machine"] = machine_description()  # now that torch is loaded, with its threads
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cir.bench.train_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a training config (train_stage1 / train_stage2)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--stages", default="stage1,stage2", help="comma-separated: stage1, stage2")
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps measured (the second has AdamW's state)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch", type=int, help="measure at this batch (stage two: group size) instead of the "
                        "config's, e.g. to fit a smaller machine and extrapolate")
    args = parser.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if not stages or any(s not in STAGES for s in stages) or args.steps < 1 or (args.batch is not None and args.batch < 1):
        parser.error("--stages takes stage1 and/or stage2; --steps and --batch must be at least 1")
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    try:
        result = measure_config(args.config, stages, args.steps, torch.device(args.device), args.batch)
    except CirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, result)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
