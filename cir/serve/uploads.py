"""Uploaded reference images: bounded in bytes and pixels, sniffed by content, decoded once, never trusted.

A refusal is an `UploadRefused` carrying the HTTP status the server answers with (413 too large, 415 not an image,
400 unreadable) and a one-line message naming what was wrong.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CirError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # about 6,300 x 6,300: far above any gallery image, far below a decompression bomb


class UploadRefused(CirError):
    """An upload the server will not read; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def read_limited(stream, limit: int, what: str) -> bytes:
    """At most `limit` bytes of a file-like object; more is a 413 before the rest is read."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UploadRefused(413, f"{what} is larger than the {limit:,} bytes this server accepts")
    if not data:
        raise UploadRefused(400, f"{what} is empty")
    return data


def checked_image(data: bytes, limits: UploadLimits, what: str):
    """The uploaded bytes as an RGB PIL image, after checking the format and the pixel count from the header."""
    from PIL import Image, UnidentifiedImageError

    try:
        probe = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UploadRefused(415, f"{what} is not an image (expected PNG, JPEG, WebP, GIF, BMP or TIFF)") from None
    except Image.DecompressionBombError:
        raise UploadRefused(413, f"{what} has too many pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:  # an image format, but its header is cut or broken
        raise UploadRefused(400, f"{what} could not be decoded ({exc})") from None
    width, height = probe.size
    if width * height > limits.max_pixels:
        raise UploadRefused(413, f"{what} is {width} x {height} pixels, over the {limits.max_pixels:,} this server accepts")
    try:
        probe.load()
        return probe.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UploadRefused(400, f"{what} could not be decoded ({exc})") from None


class UploadFolder:
    """Where uploaded references live for the length of one request: a private temporary folder."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cir-serve-")
        self.root = Path(self._tmp.name)

    def save(self, data: bytes) -> Path:
        """Write checked upload bytes under a fresh name of the server's choosing (the client's name is never used).
        The bytes are kept as sent, so an uploaded copy of a gallery image is recognised as that image."""
        handle, name = tempfile.mkstemp(suffix=".img", dir=self.root)
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        return Path(name)

    def close(self) -> None:
        self._tmp.cleanup()
