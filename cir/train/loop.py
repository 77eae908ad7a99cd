"""The training loop both stages share: seeds, warm-up + cosine schedule, progress, per-epoch validation,
checkpoints and resume, and a JSON-lines metrics log.

A stage supplies a `TrainingTask`: its trainable module, its batches, its loss, its validation, how to save weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import CirError
from ..io import atomic_path

log = logging.getLogger(__name__)


class TrainingTask(Protocol):
    module: torch.nn.Module

    def num_batches(self, batch_size: int) -> int: ...

    def batches(self, batch_size: int, rng: np.random.Generator, workers: int = 0) -> Iterator[Any]: ...

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def validate(self) -> dict[str, float]: ...

    def save_weights(self, path: Path) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Distributed:
    """This process's place in a data-parallel run (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on the CPU); one process: nothing to join."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class _LossModule(torch.nn.Module):
    """The task's loss as a module's forward, so that DistributedDataParallel sees which parameters a step used."""

    def __init__(self, task: TrainingTask) -> None:
        super().__init__()
        self.task = task
        self.trained = task.module

    def forward(self, batch: Any):
        return self.task.loss(batch)


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _mean_over_ranks(logs: dict[str, float], dist: Distributed) -> dict[str, float]:
    """Logged values averaged over the ranks (each rank's shard is the same size): the global batch's values."""
    if dist.world == 1 or not logs:
        return logs
    import torch.distributed as tdist

    values = torch.tensor(list(logs.values()), dtype=torch.float64)
    tdist.all_reduce(values)
    return dict(zip(logs, (values / dist.world).tolist()))


def fit(task: TrainingTask, cfg: TrainConfig, out: Path, resume: bool = True, weights_name: str = "model") -> dict:
    """Train for cfg.epochs, validating and checkpointing after each; returns the last validation metrics.

    `out/state.pt` (weights, optimiser, schedule position, RNG) makes a run resumable; `out/<weights_name>.safetensors`
    holds the latest weights and `out/metrics.jsonl` one line per epoch. Under torchrun every rank trains on its own
    shard of each global batch, DistributedDataParallel averages the gradients, and rank 0 alone validates and
    writes. `cfg.precision` runs the loss under autocast (fp16 with a GradScaler); `cfg.accumulate` micro-batches
    make one optimiser step.
    """
    from tqdm.auto import tqdm

    if cfg.precision not in PRECISIONS:
        raise CirError(f"precision {cfg.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if cfg.accumulate < 1:
        raise CirError(f"accumulate {cfg.accumulate}: at least 1 micro-batch per optimiser step")
    device = getattr(task, "device", torch.device("cpu"))
    dist = start_distributed(device)
    task.rank, task.world = dist.rank, dist.world
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if cfg.gradient_checkpointing:
        _enable_checkpointing(task.module)
    if cfg.dropout is not None:
        for module in task.module.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = cfg.dropout
        for model in _transformers_models(task.module):  # attention dropout is a config value there, not a module
            for key in ("attention_probs_dropout_prob", "hidden_dropout_prob", "attention_dropout"):
                if hasattr(model.config, key):
                    setattr(model.config, key, cfg.dropout)
    params = [p for p in task.module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    per_epoch = task.num_batches(cfg.batch_size)
    steps_per_epoch = max(1, per_epoch // cfg.accumulate)
    total = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, cfg.warmup_steps, total))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    step_loss: torch.nn.Module = _LossModule(task)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist.local_rank] if device.type == "cuda" else None
        step_loss = DistributedDataParallel(step_loss, device_ids=ids, find_unused_parameters=True)
    start_epoch, metrics = 0, {}
    state_path = out / "state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False, map_location=device)
        task.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, metrics = state["epoch"], state["metrics"]
        torch.set_rng_state(state["torch_rng"].cpu())
        log.info("resumed from %s at epoch %d", state_path, start_epoch)
    elif dist.main:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        task.module.train()
        started, running = time.time(), {}
        memory = _EpochMemory(device)
        batches = task.batches(cfg.batch_size, rng, workers=cfg.workers)
        bar = tqdm(batches, total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not dist.main)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            with _autocast(cfg.precision, device):
                loss, logs = step_loss(batch)
            scaler.scale(loss / cfg.accumulate).backward()
            if (i + 1) % cfg.accumulate == 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            logs = _mean_over_ranks(logs, dist)
            for name, value in logs.items():
                running[name] = running.get(name, 0.0) * i / (i + 1) + value / (i + 1)
            bar.set_postfix({n: f"{v:.3f}" for n, v in running.items()})
        running.update(memory.peaks())
        task.module.eval()
        if not dist.main:
            metrics = {"epoch": epoch + 1, **running}
            _barrier(dist)
            continue
        metrics = {"epoch": epoch + 1, "seconds": round(time.time() - started, 1), **running, **task.validate()}
        log.info("epoch %d: %s", epoch + 1, metrics)
        task.save_weights(out / f"{weights_name}.safetensors")
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "module": task.module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "metrics": metrics,
                    "torch_rng": torch.get_rng_state(),
                },
                tmp,
            )
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        _barrier(dist)
    return metrics


PRECISIONS = ("fp32", "bf16", "fp16")


class _EpochMemory:
    """The peak memory of one epoch's training steps (validation excluded): this process's resident memory (a peak
    window opened at the epoch's start where Linux allows it, else the process's peak so far) and, on a GPU, the
    most memory torch allocated there. Data-loader workers are processes of their own and are not counted."""

    def __init__(self, device: torch.device) -> None:
        from ..machine import reset_peak_rss, resident_bytes

        self.device = device
        self.start = resident_bytes()
        self.windowed = reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def peaks(self) -> dict[str, float]:
        from ..machine import peak_rss_bytes

        key = "epoch_peak_rss_mb" if self.windowed else "process_peak_rss_mb"
        out = {key: round(peak_rss_bytes() / 2**20, 1)}
        if self.start is not None:
            out["epoch_start_rss_mb"] = round(self.start / 2**20, 1)
        if self.device.type == "cuda":
            out["epoch_peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        return out


def _barrier(dist: Distributed) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def _enable_checkpointing(module: torch.nn.Module) -> None:
    """Activation checkpointing in every transformers model inside `module` (the ViT and the text encoders)."""
    found = [m for m in _transformers_models(module) if m.supports_gradient_checkpointing]
    for model in found:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    log.info("gradient checkpointing in %d transformers modules", len(found))


def _transformers_models(module: torch.nn.Module) -> list:
    from transformers import PreTrainedModel

    return [m for m in module.modules() if isinstance(m, PreTrainedModel)]

