"""Sample images: a deterministic ImageFolder tree of three shape classes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["IMAGE_CLASSES", "write_sample_images"]

#: Class folder names, in label order.
IMAGE_CLASSES = ("circles", "squares", "stripes")


def _draw(label: int, rng: np.random.Generator) -> Image.Image:
    """A class-coloured shape per class on a noisy background, 64-200 px, any aspect."""
    w, h = (int(v) for v in rng.integers(64, 201, size=2))
    bg = np.clip(rng.normal(rng.uniform(60, 190), 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    draw = ImageDraw.Draw(img)
    hue = np.roll(np.array([220, 50, 40]), label)  # each class has its own colour family
    colour = tuple(int(c) for c in np.clip(hue + rng.integers(-30, 31, size=3), 0, 255))
    s = min(w, h)
    x, y = int(rng.integers(0, w - s // 2)), int(rng.integers(0, h - s // 2))
    if label == 0:
        draw.ellipse((x, y, x + s // 2, y + s // 2), fill=colour)
    elif label == 1:
        draw.rectangle((x, y, x + s // 2, y + s // 2), fill=colour)
    else:
        step = max(4, s // 8)
        for k in range(0, w + h, 2 * step):
            draw.line((k, 0, k - h, h), fill=colour, width=step)
    return img


def write_sample_images(root: str | os.PathLike[str], per_class: int, seed: int = 0) -> int:
    """Write a deterministic ImageFolder tree of JPEGs; returns how many files it wrote.

    ``root/<class>/<class>_NNN.jpg`` for each of :data:`IMAGE_CLASSES`, ``per_class``
    files each, 64-200 px on a side; the first circle is grayscale and the first
    square CMYK, so a decoder meets both.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_sample_images(d, per_class=2, seed=0), sorted(p.name for p in d.iterdir())
    (6, ['circles', 'squares', 'stripes'])
    """
    base = Path(root)
    rng = np.random.default_rng(seed)
    n = 0
    for label, name in enumerate(IMAGE_CLASSES):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _draw(label, rng)
            if label == 0 and i == 0:
                img = img.convert("L")  # grayscale JPEG
            elif label == 1 and i == 0:
                img = img.convert("CMYK")  # CMYK JPEG
            img.save(base / name / f"{name}_{i:03d}.jpg", "JPEG", quality=90)
            n += 1
    return n
