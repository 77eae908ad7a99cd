"""A PNG contact sheet of queries (reference, text, target, then the img_set's other members) to eyeball a split."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ...errors import CirError, DatasetNotFoundError, FormatError
from ...io import atomic_path, read_json
from ...types import open_image
from .layout import caption_file, missing_split_hint, split_file, write_command

THUMB = 128  # reference and target, upscaled so the shapes are easy to see
SMALL = 64  # the other img_set members
TEXT_WIDTH = 300
PAD = 8
REQUIRED_KEYS = ("pairid", "reference", "target_hard", "caption", "img_set")


def _image(root: Path, paths: dict[str, str], name: str, side: int) -> Image.Image:
    if name not in paths:
        raise FormatError(f"{root}: image {name!r} is listed in a caption entry but not in its split file")
    return open_image(root / paths[name]).resize((side, side), Image.Resampling.NEAREST)


def contact_sheet(root: Path, split: str = "val", n: int = 12, out: Path | None = None) -> Path:
    """Draw the first `n` queries of `split`, one per row; returns the PNG path (default ./contact_sheet_<split>.png).

    Row: reference | caption | target | the four other img_set members (small, in img_set order)."""
    if n < 1:
        raise CirError(f"--n must be at least 1 (got {n})")
    root = Path(root)
    if not caption_file(root, split).is_file():
        hint = missing_split_hint(root, split) or f"write it with `{write_command(root)}`"
        raise DatasetNotFoundError(f"caption file not found: {caption_file(root, split)}; {hint}")
    entries = read_json(caption_file(root, split), "caption file")[:n]
    paths = read_json(split_file(root, split), "image split file")
    font = ImageFont.load_default(size=15)
    row_height = THUMB + 2 * PAD
    width = 2 * THUMB + TEXT_WIDTH + 4 * (SMALL + PAD) + 4 * PAD
    sheet = Image.new("RGB", (width, row_height * max(1, len(entries))), "white")
    draw = ImageDraw.Draw(sheet)
    for row, entry in enumerate(entries):
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        if missing:
            raise FormatError(f"{caption_file(root, split)}: entry {row} lacks {', '.join(missing)}")
        top = row * row_height + PAD
        sheet.paste(_image(root, paths, entry["reference"], THUMB), (PAD, top))
        text = f"#{entry['pairid']}: " + entry["caption"]
        draw.multiline_text((2 * PAD + THUMB, top + 4), "\n".join(textwrap.wrap(text, 34)), fill="black", font=font)
        x = 3 * PAD + THUMB + TEXT_WIDTH
        sheet.paste(_image(root, paths, entry["target_hard"], THUMB), (x - PAD, top))
        draw.rectangle((x - PAD - 2, top - 2, x - PAD + THUMB + 1, top + THUMB + 1), outline=(0, 160, 0), width=2)
        others = [m for m in entry["img_set"]["members"] if m not in (entry["reference"], entry["target_hard"])]
        for i, name in enumerate(others):
            sheet.paste(_image(root, paths, name, SMALL), (x + THUMB + PAD + i * (SMALL + PAD), top))
        if row:
            draw.line((0, row * row_height, width, row * row_height), fill=(200, 200, 200))
    out = Path(out) if out is not None else Path(f"contact_sheet_{split}.png")
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
