"""A PNG contact sheet of one search: the reference, the text, and the ranked results with their scores.

The text is wrapped to the sheet's width (at spaces, or anywhere in text without them, such as Chinese or Japanese)
and the header grows to fit it, up to MAX_TEXT_LINES lines, the last one ellipsized. The font is one with CJK glyphs
when the system has one (found with fontconfig or at the usual paths), else DejaVu Sans, else Pillow's own.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path
from ..pipeline import Result

log = logging.getLogger(__name__)

THUMB = 128
PAD = 8
CAPTION = 34  # pixels under each result for rank and score
PER_ROW = 5
FONT_SIZE = 13
LINE_SPACING = 4
MAX_TEXT_LINES = 8
ELLIPSIS = "…"
# Tried in order after fontconfig: fonts with CJK glyphs (Debian/Ubuntu fonts-noto-cjk, Fedora, macOS, Windows),
# then DejaVu Sans (Latin, Greek, Cyrillic).
CJK_FONT_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
FALLBACK_FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/Library/Fonts/DejaVuSans.ttf")

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _fontconfig_files(pattern: str) -> list[str]:
    """Font files fontconfig lists for `pattern` (none where fc-list is absent or fails)."""
    if shutil.which("fc-list") is None:
        return []
    try:
        listed = subprocess.run(["fc-list", pattern, "file"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    files = [line.strip().rstrip(":") for line in listed.stdout.splitlines() if line.strip()]
    # Sans before serif, regular weight before the others
    return sorted(files, key=lambda f: ("Serif" in f, "Regular" not in f and "regular" not in f, f))


@lru_cache(maxsize=None)
def sheet_font(size: int = FONT_SIZE) -> tuple[Font, str]:
    """The sheet's font and its name (a file path, or "Pillow default")."""
    candidates = [*_fontconfig_files(":lang=zh"), *CJK_FONT_PATHS, *_fontconfig_files(":family=DejaVu Sans"),
                  *FALLBACK_FONT_PATHS]
    for candidate in candidates:
        if Path(candidate).is_file():
            try:
                font = ImageFont.truetype(candidate, size)
            except OSError:
                continue
            log.info("results sheet font: %s", candidate)
            return font, candidate
    log.info("results sheet font: Pillow's default (no CJK glyphs)")
    return ImageFont.load_default(size=size), "Pillow default"


def _fit(text: str, font: Font, width: float) -> int:
    """How many leading characters of `text` fit in `width` pixels (at least one)."""
    low, high = 1, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if font.getlength(text[:mid]) <= width:
            low = mid
        else:
            high = mid - 1
    return low


def wrap_text(text: str, font: Font, width: float, max_lines: int = MAX_TEXT_LINES) -> list[str]:
    """`text` in lines no wider than `width` pixels: broken at a space where one fits, else between characters;
    at most `max_lines`, the last ending in an ellipsis when text was left out."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        rest = paragraph.strip()
        while rest:
            n = _fit(rest, font, width)
            if n < len(rest):
                space = rest.rfind(" ", 0, n + 1)
                n = space if space > 0 else n
            lines.append(rest[:n].rstrip())
            rest = rest[n:].lstrip()
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        last = last[: _fit(last + ELLIPSIS, font, width - font.getlength(ELLIPSIS))]
        lines = lines[: max_lines - 1] + [last.rstrip() + ELLIPSIS]
    return lines


def _line_height(font: Font) -> int:
    top, bottom = font.getbbox("Hg中")[1::2]
    return int(bottom - min(top, 0)) + LINE_SPACING


def _label(text: str, font: Font, width: float) -> str:
    """One line, ellipsized to `width` pixels (an image id longer than its thumbnail)."""
    if font.getlength(text) <= width:
        return text
    return text[: _fit(text, font, width - font.getlength(ELLIPSIS))] + ELLIPSIS


def results_sheet(
    reference: Image.Image, text: str, results: Sequence[Result], load: Callable[[str], Image.Image], out: str | Path
) -> Path:
    """Reference and wrapped text on top, results in rows of five below, each captioned with rank and score."""
    font, _ = sheet_font()
    cell = THUMB + PAD
    width = PAD + PER_ROW * cell
    text_x = 2 * PAD + THUMB
    line_height = _line_height(font)
    lines = wrap_text(text, font, width - text_x - PAD)
    header = max(THUMB + CAPTION, len(lines) * line_height) + PAD  # the reference and its label, or the text
    rows = (len(results) + PER_ROW - 1) // PER_ROW
    sheet = Image.new("RGB", (width, PAD + header + rows * (cell + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    sheet.paste(reference.resize((THUMB, THUMB), Image.Resampling.NEAREST), (PAD, PAD))
    draw.text((PAD, PAD + THUMB + 2), "reference", fill="black", font=font)
    for i, line in enumerate(lines):
        draw.text((text_x, PAD + i * line_height), line, fill="black", font=font)
    for i, result in enumerate(results):
        x = PAD + (i % PER_ROW) * cell
        y = PAD + header + (i // PER_ROW) * (cell + CAPTION)
        sheet.paste(load(result.image_id).resize((THUMB, THUMB), Image.Resampling.NEAREST), (x, y))
        first = f" (1st: {result.stage1_rank})" if result.stage1_rank is not None else ""
        for j, label in enumerate((f"#{result.rank} {result.image_id}", f"{result.score:.3f}{first}")):
            draw.text((x, y + THUMB + 2 + j * (CAPTION // 2)), _label(label, font, THUMB + PAD // 2), fill="black",
                      font=font)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return Path(out)
