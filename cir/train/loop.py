"""The training loop both stages share: seeds, warm-up + cosine schedule, progress, per-epoch validation,
checkpoints and resume, and a JSON-lines metrics log.

A stage supplies a `TrainingTask`: its trainable module, its batches, its loss, its validation, how to save weights.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch

from ..config import TrainConfig
from ..io import atomic_path

log = logging.getLogger(__name__)


class TrainingTask(Protocol):
    module: torch.nn.Module

    def num_batches(self, batch_size: int) -> int: ...

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Any]: ...

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


def fit(task: TrainingTask, cfg: TrainConfig, out: Path, resume: bool = True, weights_name: str = "model") -> dict:
    """Train for cfg.epochs, validating and checkpointing after each; returns the last validation metrics.

    `out/state.pt` (weights, optimiser, schedule position, RNG) makes a run resumable; `out/<weights_name>.safetensors`
    holds the latest weights and `out/metrics.jsonl` one line per epoch.
    """
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    params = [p for p in task.module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    per_epoch = task.num_batches(cfg.batch_size)
    total = per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, cfg.warmup_steps, total))
    start_epoch, metrics = 0, {}
    state_path = out / "state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        task.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, metrics = state["epoch"], state["metrics"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at epoch %d", state_path, start_epoch)
    else:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        task.module.train()
        started, running = time.time(), {}
        bar = tqdm(task.batches(cfg.batch_size, rng), total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        for i, batch in enumerate(bar):
            loss, logs = task.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            for name, value in logs.items():
                running[name] = running.get(name, 0.0) * i / (i + 1) + value / (i + 1)
            bar.set_postfix({n: f"{v:.3f}" for n, v in running.items()})
        task.module.eval()
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
    return metrics
