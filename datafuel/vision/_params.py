"""Per-sample augmentation parameters: a pure function of (seed, epoch, index, image size).

Both backends draw their crop box, flip and angle here, so the same
``(seed, epoch, sample index)`` gives the same crop on the CPU and the DALI backend,
and a resumed run repeats its augmentation exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._spec import ImageSpec

__all__ = [
    "SampleParams",
    "SampleRandom",
    "center_crop_box",
    "draft_scale",
    "random_resized_crop_box",
    "sample_params",
    "sample_rng",
]

_MASK64 = (1 << 64) - 1

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SampleParams:
    """What one sample's augmentation does.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the EXIF-oriented image (floats for
    evaluation crops); it is resized to the output size. ``flip`` mirrors the
    output; ``angle`` rotates it (degrees, counter-clockwise; 0 = no rotation).
    """

    box: Box
    flip: bool
    angle: float


_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    """splitmix64's finaliser: a bijective, well-mixed 64-bit hash."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class SampleRandom:
    """A tiny counter-based generator (splitmix64) keyed by a few integers.

    A sample needs a handful of draws; building a numpy ``Generator`` per sample costs
    ~20 us, this ~1 us. Draws are platform-independent and stable across versions.
    """

    __slots__ = ("_state",)

    def __init__(self, *key: int) -> None:
        state = _GOLDEN
        for k in key:
            state = _mix64((state ^ (int(k) & _MASK64)) + _GOLDEN & _MASK64)
        self._state = state

    def _next(self) -> int:
        self._state = (self._state + _GOLDEN) & _MASK64
        return _mix64(self._state)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        return (self._next() >> 11) * (1.0 / (1 << 53))

    def uniform(self, low: float, high: float) -> float:
        """Uniform in [low, high)."""
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int) -> int:
        """Uniform integer in [low, high) (multiply-shift; bias below 2**-40 for image sizes)."""
        return low + ((self._next() * (high - low)) >> 64)


def sample_rng(seed: int, epoch: int, index: int, salt: int = 0) -> SampleRandom:
    """An independent generator for one sample, keyed by ``(seed, epoch, index, salt)``."""
    return SampleRandom(seed, epoch, index, salt)


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: SampleRandom,
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: 10 tries, then a clamped central crop.

    Returns ``(x0, y0, x1, y1)`` integer pixel bounds inside ``width`` x ``height``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    top = (height - h) // 2
    left = (width - w) // 2
    return left, top, left + w, top + h


def center_crop_box(width: int, height: int, shorter: int, size: int) -> Box:
    """The box of the original image that ``Resize(shorter)`` then ``CenterCrop(size)`` keeps.

    Follows torchvision's integer rounding of the resized size and of the crop
    offset, then maps the crop back to original pixels (floats).
    """
    if width <= height:
        rw, rh = shorter, int(shorter * height / width)
    else:
        rw, rh = int(shorter * width / height), shorter
    top = round((rh - size) / 2.0)
    left = round((rw - size) / 2.0)
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def sample_params(
    spec: ImageSpec, width: int, height: int, seed: int, epoch: int, index: int, salt: int = 0
) -> SampleParams:
    """Box, flip and angle for one sample of a ``width`` x ``height`` (oriented) image.

    ``salt`` tells apart two transforms fed by the same loader (the transform's own seed).
    """
    if spec.random_crop is None:
        assert spec.resize is not None  # guaranteed by ImageSpec
        box: Box = center_crop_box(width, height, spec.resize.shorter, spec.size)
        if not spec.flip_p and not spec.max_degrees:
            return SampleParams(box, False, 0.0)
        rng = sample_rng(seed, epoch, index, salt)
    else:
        rng = sample_rng(seed, epoch, index, salt)
        rc = spec.random_crop
        box = tuple(
            float(v) for v in random_resized_crop_box(width, height, rc.scale, rc.ratio, rng)
        )  # type: ignore[assignment]
    flip = bool(rng.random() < spec.flip_p) if spec.flip_p else False
    angle = float(rng.uniform(-spec.max_degrees, spec.max_degrees)) if spec.max_degrees else 0.0
    return SampleParams(box, flip, angle)


def draft_scale(box: Box, size: int) -> int:
    """Largest JPEG DCT scale 1/a (a in 8, 4, 2) that keeps the crop at least ``size`` wide and tall."""
    side = min(box[2] - box[0], box[3] - box[1])
    for a in (8, 4, 2):
        if side >= a * size:
            return a
    return 1
