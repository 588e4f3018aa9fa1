"""``ImageSpec``: one augmentation spec, checked when it is built, run by either backend.

A spec is a short list of ops in a fixed grammar::

    geometry          RandomResizedCrop(size, scale, ratio)      (training)
                    | Resize(shorter) then CenterCrop(size)      (evaluation)
    then, optional    HorizontalFlip(p), Rotate(max_degrees), Normalize(mean, std)

Every spec decodes (JPEG, PNG and the other formats Pillow reads), applies the EXIF
orientation and converts to RGB first; its output is ``(size, size, 3)`` per image
(HWC), ``uint8`` unless ``Normalize`` is in it (then ``float32``). The output is known
at construction, so a loader can allocate its buffers (and refuse a mismatch) before
the first image is decoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from datafuel._checks import check_fraction, check_int
from datafuel.errors import ConfigError

__all__ = [
    "CenterCrop",
    "HorizontalFlip",
    "ImageSpec",
    "Normalize",
    "RandomResizedCrop",
    "Resize",
    "Rotate",
]

#: ImageNet channel statistics, in 0..255 units (what ``Normalize()`` uses by default).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _check_size(name: str, size: object) -> int:
    return int(check_int(name, size, high=8192))


def _check_pair(name: str, pair: object, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in pair)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a pair of numbers (min, max). Got {pair!r} instead."
        ) from None
    if not (math.isfinite(a) and math.isfinite(b) and low < a <= b <= high):
        raise ConfigError(
            f"{name} must be (min, max) with {low} < min <= max <= {high}. Got {pair!r} instead."
        )
    return a, b


@dataclass(frozen=True)
class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to ``size``.

    Same sampling as ``torchvision.transforms.RandomResizedCrop`` (10 tries, then a
    central crop clamped to ``ratio``); the resize is bilinear with antialiasing.
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        _check_size("RandomResizedCrop size", self.size)
        object.__setattr__(
            self, "scale", _check_pair("RandomResizedCrop scale", self.scale, 0.0, 1.0)
        )
        object.__setattr__(
            self, "ratio", _check_pair("RandomResizedCrop ratio", self.ratio, 0.0, math.inf)
        )


@dataclass(frozen=True)
class Resize:
    """Resize so the shorter side is ``shorter`` pixels (aspect kept); evaluation, with ``CenterCrop``."""

    shorter: int = 256

    def __post_init__(self) -> None:
        _check_size("Resize shorter", self.shorter)


@dataclass(frozen=True)
class CenterCrop:
    """Cut the central ``size`` x ``size`` square (after ``Resize``)."""

    size: int = 224

    def __post_init__(self) -> None:
        _check_size("CenterCrop size", self.size)


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        check_fraction("HorizontalFlip p", self.p)


@dataclass(frozen=True)
class Rotate:
    """Rotate by a uniform angle in ``[-max_degrees, max_degrees]``, same size, black corners.

    Rotation is not SIMD-accelerated in Pillow (about 1-3 ms per output image on a
    core): it is off unless you add it, and its cost shows in ``ImageSpec.describe()``.
    """

    max_degrees: float = 15.0

    def __post_init__(self) -> None:
        v = self.max_degrees
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 180:
            raise ConfigError(
                f"Rotate max_degrees must be a number in (0, 180]. Got {v!r} instead."
            )


@dataclass(frozen=True)
class Normalize:
    """``(x - mean) / std`` per channel, in 0..255 units; makes the output float32.

    Prefer leaving images uint8 and normalising on the device
    (:func:`datafuel.vision.normalize_on_device`): 4x fewer bytes to copy.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            v = getattr(self, name)
            try:
                t = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                t = ()
            if len(t) != 3 or not all(math.isfinite(x) for x in t):
                raise ConfigError(f"Normalize {name} must be 3 finite numbers. Got {v!r} instead.")
            if name == "std" and min(t) <= 0:
                raise ConfigError(f"Normalize std must be > 0. Got {v!r} instead.")
            object.__setattr__(self, name, t)


Op = RandomResizedCrop | Resize | CenterCrop | HorizontalFlip | Rotate | Normalize


class ImageSpec:
    """An image pipeline spec, checked at construction: output shape and dtype known up front.

    Parameters
    ----------
    ops
        ``[RandomResizedCrop(...)]`` or ``[Resize(...), CenterCrop(...)]``, then
        optionally ``HorizontalFlip``, ``Rotate`` and ``Normalize``, in that order.
    draft
        Let the CPU backend decode JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain
        when the crop is at least that many times larger than the output (no
        upsampling ever results). Off only to compare against a full decode.

    Attributes
    ----------
    size, dtype, shape
        Output side, ``"uint8"`` (or ``"float32"`` with ``Normalize``), ``(size, size, 3)``.

    Examples
    --------
    >>> from datafuel.vision import ImageSpec, RandomResizedCrop, HorizontalFlip
    >>> spec = ImageSpec([RandomResizedCrop(224), HorizontalFlip(0.5)])
    >>> spec.shape, spec.dtype
    ((224, 224, 3), 'uint8')
    >>> ImageSpec.eval(224).ops
    (Resize(shorter=256), CenterCrop(size=224))
    """

    def __init__(self, ops: Sequence[Op], *, draft: bool = True) -> None:
        ops = tuple(ops)
        order = (RandomResizedCrop, Resize, CenterCrop, HorizontalFlip, Rotate, Normalize)
        for op in ops:
            if not isinstance(op, order):
                raise ConfigError(
                    f"ImageSpec ops must be datafuel.vision ops ({', '.join(c.__name__ for c in order)}). "
                    f"Got {op!r} instead."
                )
        kinds = [type(op) for op in ops]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(
                f"each op may appear once in an ImageSpec. Got {[k.__name__ for k in kinds]}."
            )
        ranks = [order.index(k) for k in kinds]
        if ranks != sorted(ranks):
            raise ConfigError(
                "ImageSpec ops must come in the order geometry (RandomResizedCrop, or Resize then "
                f"CenterCrop), HorizontalFlip, Rotate, Normalize. Got {[k.__name__ for k in kinds]}."
            )
        has = {k: op for k, op in zip(kinds, ops, strict=True)}
        if RandomResizedCrop in has and (Resize in has or CenterCrop in has):
            raise ConfigError(
                "use RandomResizedCrop (training) or Resize + CenterCrop (evaluation), not both."
            )
        if RandomResizedCrop not in has and not (Resize in has and CenterCrop in has):
            raise ConfigError(
                "an ImageSpec needs a geometry that gives a fixed output size: RandomResizedCrop(size), "
                f"or Resize(shorter) followed by CenterCrop(size). Got {[k.__name__ for k in kinds]}."
            )
        if Resize in has and CenterCrop in has and has[CenterCrop].size > has[Resize].shorter:  # type: ignore[union-attr]
            raise ConfigError(
                f"CenterCrop size {has[CenterCrop].size} is larger than Resize shorter "  # type: ignore[union-attr]
                f"{has[Resize].shorter}: the crop would leave the image."  # type: ignore[union-attr]
            )
        if not isinstance(draft, bool):
            raise ConfigError(f"draft must be True or False. Got {draft!r} instead.")
        self.ops: tuple[Op, ...] = ops
        self.draft = draft
        self.random_crop: RandomResizedCrop | None = has.get(RandomResizedCrop)  # type: ignore[assignment]
        self.resize: Resize | None = has.get(Resize)  # type: ignore[assignment]
        self.flip_p = has[HorizontalFlip].p if HorizontalFlip in has else 0.0  # type: ignore[union-attr]
        self.max_degrees = has[Rotate].max_degrees if Rotate in has else 0.0  # type: ignore[union-attr]
        self.normalize: Normalize | None = has.get(Normalize)  # type: ignore[assignment]
        self.size: int = (
            self.random_crop.size if self.random_crop is not None else has[CenterCrop].size  # type: ignore[union-attr]
        )
        self.dtype = "float32" if self.normalize is not None else "uint8"
        self.shape = (self.size, self.size, 3)

    @classmethod
    def train(
        cls,
        size: int = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        rotate_degrees: float = 0.0,
        normalize: bool = False,
        draft: bool = True,
    ) -> ImageSpec:
        """The usual training spec: RandomResizedCrop + HorizontalFlip (+ Rotate, Normalize)."""
        ops: list[Op] = [RandomResizedCrop(size, scale, ratio)]
        if flip_p > 0:
            ops.append(HorizontalFlip(flip_p))
        if rotate_degrees:
            ops.append(Rotate(rotate_degrees))
        if normalize:
            ops.append(Normalize())
        return cls(ops, draft=draft)

    @classmethod
    def eval(
        cls,
        size: int = 224,
        *,
        resize: int | None = None,
        normalize: bool = False,
        draft: bool = True,
    ) -> ImageSpec:
        """The usual evaluation spec: Resize(shorter = size / 0.875) + CenterCrop(size)."""
        _check_size("size", size)
        ops: list[Op] = [
            Resize(resize if resize is not None else round(size / 0.875)),
            CenterCrop(size),
        ]
        if normalize:
            ops.append(Normalize())
        return cls(ops, draft=draft)

    @property
    def output_spec(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{"image": (dtype, (size, size, 3))}``: what one sample becomes."""
        return {"image": (self.dtype, self.shape)}

    def describe(self) -> str:
        """One line naming every step, with the costly ones flagged."""
        steps = ["decode+exif+RGB"]
        if self.random_crop is not None:
            rc = self.random_crop
            steps.append(
                f"RandomResizedCrop({rc.size}, scale={rc.scale}, ratio=({rc.ratio[0]:.3g}, {rc.ratio[1]:.3g}))"
            )
        else:
            steps.append(f"Resize({self.resize.shorter})+CenterCrop({self.size})")  # type: ignore[union-attr]
        if self.flip_p:
            steps.append(f"HorizontalFlip({self.flip_p:g})")
        if self.max_degrees:
            steps.append(f"Rotate({self.max_degrees:g}) [slow: not SIMD, ~1-3 ms/image on CPU]")
        if self.normalize is not None:
            steps.append("Normalize [float32 output: 4x the bytes; prefer normalize_on_device]")
        return (
            " -> ".join(steps)
            + f" => {self.dtype}{list(self.shape)}"
            + (" (JPEG DCT draft)" if self.draft else "")
        )

    def __repr__(self) -> str:
        return f"ImageSpec({list(self.ops)!r}, draft={self.draft})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageSpec) and (self.ops, self.draft) == (other.ops, other.draft)

    def __hash__(self) -> int:
        return hash((self.ops, self.draft))
