"""Image preprocessing: the reference work's "targetpad" transform, with Pillow and torch only (no torchvision).

pad to the target aspect ratio (when long/short >= ratio) -> resize the shorter side with PIL bicubic ->
centre-crop -> [0, 1] -> normalise.  The arithmetic follows torchvision's PIL path so pixels match the reference.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


def target_pad(image: Image.Image, ratio: float) -> Image.Image:
    """Zero-pad symmetrically so long/short falls to `ratio`, when it is `ratio` or more (else unchanged)."""
    width, height = image.size
    if max(width, height) / min(width, height) < ratio:
        return image
    scaled_max = max(width, height) / ratio
    pad_x = max(int((scaled_max - width) / 2), 0)
    pad_y = max(int((scaled_max - height) / 2), 0)
    if pad_x == 0 and pad_y == 0:
        return image
    padded = Image.new(image.mode, (width + 2 * pad_x, height + 2 * pad_y), 0)
    padded.paste(image, (pad_x, pad_y))
    return padded


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the shorter side is `size` (the longer side is truncated, as torchvision does)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    if new_size == (width, height):
        return image
    return image.resize(new_size, Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class ImagePreprocessor:
    """`prep(images) -> (B, 3, size, size)` float32 tensor, normalised with `mean`/`std`."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        pad_ratio: float = 1.25,
    ) -> None:
        self.size = size
        self.pad_ratio = pad_ratio
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Pad, resize and crop one image; (size, size, 3) uint8 RGB."""
        image = image.convert("RGB")
        image = target_pad(image, self.pad_ratio)
        image = resize_shorter_side(image, self.size)
        image = center_crop(image, self.size)
        return np.asarray(image, dtype=np.uint8)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if isinstance(images, Image.Image):
            raise TypeError("ImagePreprocessor takes a list of images, not a single image")
        if not images:
            return torch.zeros((0, 3, self.size, self.size), dtype=torch.float32)
        batch = np.stack([self.to_uint8(image) for image in images])
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255)
        return (pixels - self.mean) / self.std
