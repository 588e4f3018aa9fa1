"""Real encoded images for the vision tests: JPEG (baseline, progressive, grayscale,
CMYK, EXIF-rotated), PNG (RGBA, palette, 16-bit), GIF, BMP, and broken files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise and a bright square: realistic-ish, asymmetric content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a = np.stack([x * 255 / width, y * 255 / height, 128 + 100 * np.sin(x / 17 + y / 23)], axis=-1)
    a += rng.normal(0, 6, a.shape)
    a[height // 8 : height // 3, width // 8 : width // 3] = (250, 250, 40)
    return np.clip(a, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(width: int, height: int, seed: int = 0, **kw: object) -> bytes:
    kw.setdefault("quality", 90)
    return encode(Image.fromarray(pattern(width, height, seed)), "JPEG", **kw)


def exif_jpeg(width: int, height: int, orient: int, seed: int = 0) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orient
    return jpeg(width, height, seed, exif=ex.tobytes())


def variety() -> dict[str, bytes]:
    """One of each kind the decoders must handle."""
    rgb = Image.fromarray(pattern(200, 150, 3))
    return {
        "baseline": jpeg(500, 375, 1),
        "small": jpeg(64, 48, 2),
        "tall": jpeg(120, 260, 4),
        "large": jpeg(1280, 720, 5),
        "progressive": jpeg(320, 240, 6, progressive=True),
        "gray": encode(rgb.convert("L"), "JPEG", quality=90),
        "cmyk": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "exif6": exif_jpeg(320, 240, 6, 7),
        "exif3": exif_jpeg(300, 200, 3, 8),
        "rgba_png": encode(rgb.convert("RGBA"), "PNG"),
        "palette_png": encode(rgb.convert("P"), "PNG"),
        "png16": encode(
            Image.fromarray(pattern(200, 150, 9)[..., 0].astype(np.uint16) * 257), "PNG"
        ),
        "gif": encode(rgb.convert("P"), "GIF"),
        "bmp": encode(rgb, "BMP"),
    }


def broken() -> dict[str, bytes]:
    good = jpeg(300, 200, 11)
    return {
        "truncated.jpg": good[: len(good) // 2],
        "zero.jpg": b"",
        "text.jpg": b"this is not an image, just text\n" * 4,
        "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2,
    }


def make_folder(
    root: Path, per_class: int = 6, classes: tuple[str, ...] = ("cat", "dog", "eel")
) -> Path:
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            w, h = 48 + 16 * i, 40 + 8 * c
            (d / f"img_{i:02d}.jpg").write_bytes(jpeg(w, h, seed=100 * c + i))
    return root


COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230))


def colour_image(label: int, seed: int) -> bytes:
    """A class-coloured blob on a noisy grey background, random size and place."""
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(48, 120, size=2))
    a = np.clip(rng.normal(120, 30, (h, w, 3)), 0, 255)
    cx, cy, r = rng.integers(w // 4, 3 * w // 4), rng.integers(h // 4, 3 * h // 4), min(w, h) // 3
    y, x = np.mgrid[0:h, 0:w]
    a[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = COLOURS[label]
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()
