"""Pillow rendering of a structured scene, antialiased, with nuisance variation that defeats pixel matching.

Nuisance (drawn from the per-image seed, never part of the scene key): a background tint with a smooth random
texture, per-object position jitter, a slight rotation and a small shade change of the object's colour.
The scene is drawn at SUPERSAMPLE times the size on the upscaled background and box-filtered down.
"""

from __future__ import annotations

import colorsys
import math
import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOURS, GRID, Scene, SceneObject

SUPERSAMPLE = 4
# Object radius as a fraction of a grid cell; the gap between the two keeps size readable despite jitter.
RADIUS = {"small": 0.24, "large": 0.42}
MAX_JITTER = 0.07  # fraction of a cell
MAX_ROTATION = 15.0  # degrees: small enough that a square never looks like a diamond
Point = tuple[float, float]


def _circle(radius: float = 1.0, centre: Point = (0.0, 0.0), start: float = 0.0, stop: float = 360.0,
            steps: int = 40) -> list[Point]:
    """Points on an arc (degrees, y down), `steps` segments from `start` to `stop`."""
    return [
        (centre[0] + radius * math.cos(math.radians(a)), centre[1] + radius * math.sin(math.radians(a)))
        for a in (start + (stop - start) * i / steps for i in range(steps + 1))
    ]


def _star(points: int = 5, inner: float = 0.45) -> list[Point]:
    return [
        (r * math.cos(a), r * math.sin(a))
        for i in range(2 * points)
        for r, a in [((1.0 if i % 2 == 0 else inner), -math.pi / 2 + i * math.pi / points)]
    ]


def _heart() -> list[Point]:
    pts = []
    for i in range(48):
        t = 2 * math.pi * i / 48
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 16.5, -(y + 2.5) / 15.5))
    return pts


def _crescent(offset: float = 0.5, inner: float = 0.85) -> list[Point]:
    """The unit disc minus a disc of radius `inner` shifted right by `offset`, recentred."""
    x = (1 + offset**2 - inner**2) / (2 * offset)
    top = math.degrees(math.atan2(math.sqrt(1 - x * x), x))
    inner_top = math.degrees(math.atan2(math.sqrt(1 - x * x), x - offset))
    outer_arc = _circle(1.0, (0, 0), top, 360 - top)
    inner_arc = _circle(inner, (offset, 0), 360 - inner_top, inner_top)
    return [(px + 0.25, py) for px, py in outer_arc + inner_arc]


@lru_cache(maxsize=None)
def unit_outline(shape: str) -> tuple[Point, ...]:
    """The shape as a polygon around (0, 0) fitting the unit circle, y pointing down."""
    outlines = {
        "circle": _circle(0.95),
        "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
        "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
        "star": _star(),
        "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
        "cross": [(-0.3, -0.9), (0.3, -0.9), (0.3, -0.3), (0.9, -0.3), (0.9, 0.3), (0.3, 0.3), (0.3, 0.9),
                  (-0.3, 0.9), (-0.3, 0.3), (-0.9, 0.3), (-0.9, -0.3), (-0.3, -0.3)],
        "heart": _heart(),
        "crescent": _crescent(),
    }
    return tuple(outlines[shape])


def _background(rng: random.Random, size: int) -> Image.Image:
    """A light, desaturated tint with a smooth random texture (flat, gradient-like or blotchy)."""
    hue, sat, val = rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.55, 0.97)
    base = np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0
    grid = rng.choice((1, 2, 3, 5))
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(0.0, 20.0), (grid, grid, 3))
    texture = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(texture, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def _shade(rgb: tuple[int, int, int], rng: random.Random) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The object's fill (its colour, slightly re-shaded) and a darker outline of the same hue."""
    factor = rng.uniform(0.9, 1.08)
    fill = tuple(int(min(255, max(0, c * factor + rng.uniform(-8, 8)))) for c in rgb)
    return fill, tuple(int(c * 0.55) for c in fill)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, canvas: int, rng: random.Random) -> None:
    cell = canvas / GRID
    cx = (obj.col + 0.5 + rng.uniform(-MAX_JITTER, MAX_JITTER)) * cell
    cy = (obj.row + 0.5 + rng.uniform(-MAX_JITTER, MAX_JITTER)) * cell
    radius = RADIUS[obj.size] * cell * rng.uniform(0.95, 1.05)
    angle = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    cos, sin = math.cos(angle), math.sin(angle)
    points = [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
              for x, y in unit_outline(obj.shape)]
    fill, outline = _shade(COLOURS[obj.colour], rng)
    draw.polygon(points, fill=fill, outline=outline, width=max(1, round(canvas / 64 * 1.1)))


def render(scene: Scene, image_size: int = 64, seed: int = 0) -> Image.Image:
    """The scene as an RGB image of `image_size` pixels; the same (scene, size, seed) gives the same pixels."""
    rng = random.Random(seed)
    canvas_size = image_size * SUPERSAMPLE
    # The texture is smooth, so it is interpolated at the output size and only the objects are supersampled.
    canvas = _background(rng, image_size).resize((canvas_size, canvas_size), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene:
        _draw_object(draw, obj, canvas_size, rng)
    return canvas.reduce(SUPERSAMPLE)
