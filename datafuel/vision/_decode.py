"""Decoding encoded image bytes with Pillow: open, EXIF orientation, RGB, and errors.

Every Pillow failure (unidentified format, truncated data, zero bytes, a
decompression bomb) leaves here as a :class:`~datafuel.errors.DecodeError` naming
what was being decoded, raised ``from`` Pillow's error.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from datafuel.errors import DecodeError

__all__ = [
    "ORIENTATION_TRANSPOSE",
    "decode_image",
    "image_info",
    "open_image",
    "orientation",
    "raw_box",
    "to_rgb",
]

#: EXIF orientation -> the transpose that rectifies the stored pixels (as ImageOps.exif_transpose).
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

#: what Pillow raises on bad image data
PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)


def open_image(data: bytes | memoryview, *, what: str = "image") -> Image.Image:
    """Open (header only, lazily) an encoded image; ``what`` names it in errors."""
    if not len(data):
        raise DecodeError(f"{what}: zero bytes, not an image.")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise DecodeError(
            f"{what}: not an image format Pillow can read (unknown or unsupported; "
            f"first bytes {bytes(data[:8])!r})."
        ) from exc
    except PIL_ERRORS as exc:
        raise DecodeError(f"{what}: not a readable image ({type(exc).__name__}: {exc}).") from exc


def orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 of an opened image (1 when absent or unreadable)."""
    if im.format == "JPEG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(0x0112, 1)
    except PIL_ERRORS:
        return 1  # malformed EXIF: keep the pixels as stored rather than refuse the image
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(im: Image.Image, orient: int) -> tuple[int, int]:
    """``(width, height)`` after the EXIF orientation is applied."""
    w, h = im.size
    return (h, w) if orient >= 5 else (w, h)


def raw_box(
    box: tuple[float, float, float, float], orient: int, width: int, height: int
) -> tuple[float, float, float, float]:
    """Map a box in the oriented image to the stored (raw) ``width`` x ``height`` pixels."""
    x0, y0, x1, y1 = box
    w, h = width, height
    return {
        1: (x0, y0, x1, y1),
        2: (w - x1, y0, w - x0, y1),
        3: (w - x1, h - y1, w - x0, h - y0),
        4: (x0, h - y1, x1, h - y0),
        5: (y0, x0, y1, x1),
        6: (y0, h - x1, y1, h - x0),
        7: (w - y1, h - x1, w - y0, h - x0),
        8: (w - y1, x0, w - y0, x1),
    }[orient]


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB version of a decoded image: grayscale, CMYK, palette, 16-bit and alpha handled.

    Alpha is dropped (as ``Image.convert("RGB")`` and torchvision's loader do, and as
    DALI's RGB decode does); palette images go through RGBA first so a transparent
    index still gets its palette colour.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8), "L").convert(
            "RGB"
        )
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "PA"):
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")


def image_info(data: bytes, *, what: str = "image") -> dict[str, Any]:
    """Fully decode ``data`` (validation) and return ``{"format", "mode", "width", "height"}``.

    Width and height are after EXIF orientation. Raises :class:`DecodeError` for
    anything Pillow cannot decode to the last byte (truncated files included).
    """
    im = open_image(data, what=what)
    try:
        with im:
            im.load()
            orient = orientation(im)
            w, h = oriented_size(im, orient)
            return {"format": im.format, "mode": im.mode, "width": w, "height": h}
    except PIL_ERRORS as exc:
        raise DecodeError(f"{what}: cannot decode ({type(exc).__name__}: {exc}).") from exc


def decode_image(data: bytes, *, what: str = "image") -> np.ndarray:
    """Decode to an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    >>> import io, numpy as np
    >>> from PIL import Image, UnidentifiedImageError
    >>> buf = io.BytesIO(); Image.new("L", (4, 2), 128).save(buf, "PNG")
    >>> decode_image(buf.getvalue()).shape
    (2, 4, 3)
    """
    im = open_image(data, what=what)
    try:
        with im:
            im.load()
            orient = orientation(im)
            rgb = to_rgb(im)
            if orient in ORIENTATION_TRANSPOSE:
                rgb = rgb.transpose(ORIENTATION_TRANSPOSE[orient])
            return np.asarray(rgb)
    except PIL_ERRORS as exc:
        raise DecodeError(f"{what}: cannot decode ({type(exc).__name__}: {exc}).") from exc
