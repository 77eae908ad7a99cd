"""Synthetic-only training probes: the scene metadata of the synthetic benchmark as auxiliary labels.

Both stages' `scene_weight` options use them; they are training-only and never saved with the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scene_labels(root, split: str, image_ids: list[str]) -> torch.Tensor:
    """(N, cells, 3) class ids of each image's cells from the synthetic metadata: shape, colour, size (0 = empty)."""
    from ..data.synth import load_metadata, split_metadata

    meta = load_metadata(root)
    vocab = meta["vocab"]
    index = {f: {v: i + 1 for i, v in enumerate(vocab[f + "s"])} for f in ("shape", "size")}
    index["colour"] = {v: i + 1 for i, v in enumerate(vocab["colours"])}
    grid = vocab["grid"]
    scenes = split_metadata(root, split)["scenes"]
    labels = torch.zeros(len(image_ids), grid * grid, 3, dtype=torch.long)
    for row, image_id in enumerate(image_ids):
        for r, c, shape, colour, size in scenes[image_id]:
            labels[row, r * grid + c] = torch.tensor([index["shape"][shape], index["colour"][colour], index["size"][size]])
    return labels


def scene_classes(labels: torch.Tensor) -> tuple[int, int, int]:
    """Class counts (empty included) of the shape, colour and size columns of `scene_labels`."""
    return tuple(int(labels[..., i].max()) + 1 for i in range(3))


class SceneProbes(torch.nn.Module):
    """Training-only linear probes: image CLS -> its scene; query token 0 -> the target's scene."""

    def __init__(self, image_width: int, text_width: int, cells: int, classes: tuple[int, int, int], per_patch: bool):
        super().__init__()
        self.cells, self.classes = cells, classes
        self.image = torch.nn.Linear(image_width, cells * sum(classes))
        self.query = torch.nn.Linear(text_width, cells * sum(classes))
        self.patch = torch.nn.Linear(image_width, sum(classes)) if per_patch else None

    def loss(self, probe: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = probe(features).reshape(len(features), self.cells, sum(self.classes)).split(self.classes, dim=-1)
        return sum(F.cross_entropy(l.reshape(-1, l.shape[-1]), labels[..., i].reshape(-1)) for i, l in enumerate(logits)) / 3

    def image_loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CLS -> the whole scene, plus (per_patch) each patch token -> its own cell."""
        loss = self.loss(self.image, tokens[:, 0], labels)
        if self.patch is not None:
            loss = loss + self.loss(self.patch, tokens[:, 1:], labels)
        return loss
