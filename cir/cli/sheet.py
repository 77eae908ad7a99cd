"""A PNG contact sheet of one search: the reference, the text, and the ranked results with their scores."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path
from ..pipeline import Result

THUMB = 128
PAD = 8
CAPTION = 34  # pixels under each result for rank and score
PER_ROW = 5


def results_sheet(
    reference: Image.Image, text: str, results: Sequence[Result], load: Callable[[str], Image.Image], out: str | Path
) -> Path:
    """Reference and text on the first row, results in rows of five below, each captioned with rank and score."""
    font = ImageFont.load_default(size=13)
    rows = 1 + (len(results) + PER_ROW - 1) // PER_ROW
    cell = THUMB + PAD
    sheet = Image.new("RGB", (PAD + PER_ROW * cell, PAD + rows * (cell + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    sheet.paste(reference.resize((THUMB, THUMB), Image.Resampling.NEAREST), (PAD, PAD))
    draw.text((PAD, PAD + THUMB + 2), "reference", fill="black", font=font)
    draw.multiline_text((2 * PAD + THUMB, PAD), "\n".join(textwrap.wrap(text, 60)), fill="black", font=font)
    for i, result in enumerate(results):
        x = PAD + (i % PER_ROW) * cell
        y = PAD + (1 + i // PER_ROW) * (cell + CAPTION)
        sheet.paste(load(result.image_id).resize((THUMB, THUMB), Image.Resampling.NEAREST), (x, y))
        first = f" (1st: {result.stage1_rank})" if result.stage1_rank is not None else ""
        label = f"#{result.rank} {result.image_id}\n{result.score:.3f}{first}"
        draw.multiline_text((x, y + THUMB + 2), label, fill="black", font=font)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(out)
