"""CPU backend: region JPEG decode, DCT scaling, crop+resize in one pass (pillow-simd).

Per image: read the header, draw the sample's box/flip/angle from
``(seed, epoch, index)``, map the box from the EXIF-oriented frame to the stored
pixels, pick a DCT scale that keeps the crop at least the output size, decode, resize
only the box (``Image.resize(box=...)``, antialiased bilinear, SIMD in pillow-simd),
then orient, flip and rotate the small output.

JPEGs are decoded by ``_jpegregion`` (a small C extension over libjpeg-turbo) when it
was built: only the rows and columns the resize reads, so a RandomResizedCrop pays
for its box rather than the whole image, with the same pixels a full decode gives.
Other formats, CMYK and 12-bit JPEGs, and installs without the extension take the
Pillow path (``Image.draft`` plus a row-limited decode). Decode and resize release the
GIL, so the loader's worker threads run them in parallel.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any, cast

import numpy as np
from PIL import Image

from datafuel._checks import check_int
from datafuel.errors import ConfigError, DecodeError, SchemaError

from ._decode import ORIENTATION_TRANSPOSE, PIL_ERRORS, open_image, orientation, raw_box, to_rgb
from ._folder import IMAGE_FIELD, LEGACY_IMAGE_FIELD, image_field_of
from ._jpeg import jpeg_header, truncate_rows
from ._params import draft_scale, sample_params
from ._spec import ImageSpec

_decode_region: Callable[..., tuple[bytes, int, int, int, int] | None] | None
_decode_batch: Callable[..., list[Any]] | None
_plan_batch: Callable[..., None] | None
_pack_rgb: Callable[..., None] | None
try:
    from . import _jpegregion
except ImportError:  # built without a C compiler or libjpeg headers: Pillow decodes whole images
    _decode_region = _decode_batch = _plan_batch = None
else:
    _decode_region = _jpegregion.decode_region
    _decode_batch = getattr(_jpegregion, "decode_batch", None)
    _plan_batch = getattr(_jpegregion, "plan_batch", None)
try:
    from . import _pack
except ImportError:  # built without a C compiler: Pillow's tobytes and numpy pack the pixels
    _pack_rgb = None
else:
    _pack_rgb = _pack.pack_rgb

__all__ = [
    "CPUTransform",
    "augment_image",
    "available_cores",
    "batch_decode_available",
    "pil_build",
    "region_decode_available",
]

_RESIZE_MODES = ("RGB", "L", "CMYK")
#: pixels beyond the resize filter's reach decoded on every side of the box, so that
#: libjpeg's chroma-upsampling edge at the region's border never reaches a pixel read
_REGION_MARGIN = 4


def region_decode_available() -> bool:
    """Whether JPEGs are decoded region by region (the ``_jpegregion`` extension was built)."""
    return _decode_region is not None


def batch_decode_available() -> bool:
    """Whether a batch's JPEGs go through one native call (``_jpegregion.decode_batch``)."""
    return _decode_batch is not None


def available_cores() -> int:
    """The cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


#: what ``pil_build()["advice"]`` says when the active PIL is stock Pillow
STOCK_PILLOW_ADVICE = (
    "stock Pillow resizes about 3x slower than pillow-simd (a package that depends on "
    "'pillow', e.g. scikit-image or matplotlib, replaced it); restore pillow-simd with: "
    "bash scripts/setup.sh (in the datafuel checkout; PYTHON={python} for this interpreter)"
)


def pil_build() -> dict[str, Any]:
    """Which PIL is imported: pillow-simd (what datafuel's CPU image path is tuned for) or stock.

    Installing anything that depends on ``pillow`` replaces pillow-simd with stock
    Pillow (same ``PIL`` package, about 3x slower at resizing) without a word; the
    ``profile --decode cpu`` and ``inspect`` verbs report this.

    Returns ``{"version": PIL.__version__, "distribution": "pillow-simd" | "pillow" |
    None, "simd": bool, "libjpeg_turbo": version | None, "path": PIL's directory,
    "advice": None | how to restore pillow-simd}``. The distribution is the installed
    one whose files hold the imported ``PIL``; ``simd`` falls back to pillow-simd's
    ``.postN`` version suffix when no metadata matches.

    >>> from datafuel.vision import pil_build
    >>> info = pil_build()
    >>> info["simd"] == (info["advice"] is None)
    True
    """
    import importlib.metadata
    import sys
    from pathlib import Path

    import PIL
    from PIL import features

    here = Path(PIL.__file__).resolve()
    dist_name: str | None = None
    for name in ("pillow-simd", "pillow"):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Path(str(dist.locate_file("PIL/__init__.py"))).resolve() == here:
            dist_name = name
            break
    simd = dist_name == "pillow-simd" if dist_name else ".post" in PIL.__version__
    try:
        turbo = features.version("libjpeg_turbo")
    except ValueError:  # a Pillow too old to know the feature
        turbo = None
    return {
        "version": PIL.__version__,
        "distribution": dist_name,
        "simd": simd,
        "libjpeg_turbo": turbo,
        "path": str(here.parent),
        "advice": None if simd else STOCK_PILLOW_ADVICE.format(python=sys.executable),
    }


def pil_build_line() -> str:
    """One line naming the active PIL, and, for stock Pillow, how to restore pillow-simd."""
    info = pil_build()
    name = "pillow-simd" if info["simd"] else "stock Pillow"
    turbo = f", libjpeg-turbo {info['libjpeg_turbo']}" if info["libjpeg_turbo"] else ""
    line = f"PIL: {name} {info['version']}{turbo} ({info['path']})"
    return line if info["advice"] is None else f"{line}. Warning: {info['advice']}"


def _region_resize(
    data: bytes, box: tuple[float, float, float, float], a: int, size: int, what: str
) -> Image.Image | None:
    """Decode just the part of a JPEG that resizing ``box`` reads, at DCT scale 1/``a``, and resize.

    Pillow's antialiased bilinear filter reads ``max(1, box/size)`` pixels past each
    side of the box; the region adds :data:`_REGION_MARGIN` more, so every pixel read
    is the one a whole-image decode gives, and the output is identical. ``None`` when
    libjpeg-turbo's region path does not handle this JPEG (CMYK, 12-bit).
    """
    assert _decode_region is not None
    x0, y0, x1, y1 = box[0] / a, box[1] / a, box[2] / a, box[3] / a
    rx = max(1.0, (x1 - x0) / size) + _REGION_MARGIN
    ry = max(1.0, (y1 - y0) / size) + _REGION_MARGIN
    left, top = max(0, math.floor(x0 - rx)), max(0, math.floor(y0 - ry))
    try:
        got = _decode_region(
            data, left, top, math.ceil(x1 + rx) - left, math.ceil(y1 + ry) - top, a
        )
    except ValueError as exc:
        raise DecodeError(f"{what}: cannot decode ({exc}).") from exc
    if got is None:
        return None
    pixels, left, top, width, height = got
    # RGBX rows: Pillow maps them without a copy (3 us, where an RGB frombuffer copies: 70 us)
    region = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    return _resize_box(region, size, (x0, y0, x1, y1), (left, top))


_PASS_ORDER: dict[str, bool] = {}


def _one_call_runs_horizontal_first() -> bool:
    """Whether one ``Image.resize`` call always runs its horizontal pass first: pillow-simd's does."""
    if "simd" not in _PASS_ORDER:
        _PASS_ORDER["simd"] = bool(pil_build()["simd"])
    return _PASS_ORDER["simd"]


def _f32(v: float) -> float:
    """``v`` rounded to a C float, as Pillow's ``resize(box=...)`` takes it."""
    return float(np.float32(v))


def _resize_box(
    im: Image.Image,
    size: int,
    box: tuple[float, float, float, float],
    origin: tuple[int, int] = (0, 0),
) -> Image.Image:
    """``im.resize((size, size), BILINEAR, box=box)`` with the same pixels on every Pillow build.

    ``box`` is in the coordinates of the whole image; ``im``'s top-left pixel is at
    ``origin`` in them (a decoded region's offset, ``(0, 0)`` for the whole image).

    Pillow resizes in two passes, rounding to 8 bits between them. pillow-simd always
    runs the horizontal pass first; stock Pillow (13) picks the order from the source's
    size, so the same box resized in a narrow region and in the whole image rounded
    differently (by 1 in a fifth of the values, more after a rotation). Two single-pass
    calls fix the order: horizontal, over just the rows the vertical filter reads (its
    vertical pass an exact identity), then vertical. pillow-simd keeps its one call
    (the same pixels, ~30% less time). The box is rounded to C floats before it is
    shifted by ``origin``, so a region sees the sample positions the whole image does.
    """
    ox, oy = origin
    x0, y0, x1, y1 = _f32(box[0]) - ox, _f32(box[1]) - oy, _f32(box[2]) - ox, _f32(box[3]) - oy
    bilinear = Image.Resampling.BILINEAR
    if _one_call_runs_horizontal_first():
        return im.resize((size, size), bilinear, box=(x0, y0, x1, y1))
    # rows the vertical pass reads: the bilinear filter's support is max(1, scale) around a centre
    support = max(1.0, (y1 - y0) / size)
    r0 = max(0, math.floor(y0 - support) - 1)
    r1 = min(im.height, math.ceil(y1 + support) + 1)
    if 4 * (im.height - (r1 - r0)) <= r1 - r0:  # few rows to skip: one pass over all of them
        r0, r1 = 0, im.height
        wide = im.resize((size, im.height), bilinear, box=(x0, 0, x1, im.height))
    else:
        wide = im.resize((size, r1 - r0), bilinear, box=(x0, r0, x1, r1))
    return wide.resize((size, size), bilinear, box=(0, y0 - r0, size, y1 - r0))


def _store(im: Image.Image, dst: np.ndarray, flip: bool) -> None:
    """Write ``im`` (mirrored if ``flip``) into ``dst``, an ``(H, W, 3)`` uint8 C-contiguous array.

    An RGBX image goes through ``_pack.pack_rgb``: Pillow exports its pixels
    without a copy (the Arrow C data interface) and one pass packs and mirrors them
    into ``dst`` with the GIL released (~10 us at 224x224, where transpose + tobytes +
    a numpy copy take ~45-250 us and allocate twice).
    """
    # (never a frombuffer-mapped image: Pillow 12's Arrow export dereferences NULL on those)
    if im.mode == "RGBX" and _pack_rgb is not None and not im.readonly:
        try:
            schema, array = im.__arrow_c_array__()  # type: ignore[attr-defined]
        except (AttributeError, ValueError, TypeError):  # an older Pillow, or several blocks
            pass
        else:
            _pack_rgb(schema, array, dst, im.width, im.height, flip)
            return
    if flip:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if im.mode == "RGBX":
        dst[...] = np.frombuffer(im.tobytes("raw", "RGB"), np.uint8).reshape(dst.shape)
    else:
        dst[...] = np.asarray(to_rgb(im))


def augment_image(
    data: bytes,
    spec: ImageSpec,
    *,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    salt: int = 0,
    what: str = "image",
) -> np.ndarray:
    """Run ``spec`` on one encoded image on the CPU; returns ``spec.shape`` uint8 (before Normalize).

    >>> import io
    >>> from PIL import Image
    >>> from datafuel.vision import ImageSpec, augment_image
    >>> buf = io.BytesIO(); Image.new("RGB", (500, 375), "red").save(buf, "JPEG")
    >>> augment_image(buf.getvalue(), ImageSpec.train(224), seed=0, index=3).shape
    (224, 224, 3)
    """
    out = np.empty(spec.shape, np.uint8)
    _augment(data, spec, seed, epoch, index, salt, what, out)
    return out


def _augment(
    data: Any,
    spec: ImageSpec,
    seed: int,
    epoch: int,
    index: int,
    salt: int,
    what: str,
    dst: np.ndarray,
) -> None:
    """:func:`augment_image` writing into ``dst`` (a C-contiguous ``spec.shape`` uint8 array)."""
    hdr = jpeg_header(data)
    fmt: str | None
    try:
        if (
            hdr is not None and not hdr[3]
        ):  # a JPEG without EXIF: no need for Pillow to read it twice
            width, height, offset, _ = hdr
            orient, fmt = 1, "JPEG"
        else:
            with open_image(data, what=what) as im:
                orient = orientation(im)
                width, height = im.size
                fmt = im.format
            offset = hdr[2] if hdr is not None and (hdr[0], hdr[1]) == (width, height) else None
        ow, oh = (height, width) if orient >= 5 else (width, height)
        p = sample_params(spec, ow, oh, seed, epoch, index, salt)
        box = raw_box(p.box, orient, width, height)
        a = draft_scale(box, spec.size) if spec.draft and fmt == "JPEG" else 1
        out = None
        if fmt == "JPEG" and _decode_region is not None:
            out = _region_resize(data, box, a, spec.size, what)
        if out is None:
            out = _pillow_resize(
                data, box, a, offset if fmt == "JPEG" else None, height, spec, what
            )
    except DecodeError:
        raise
    except PIL_ERRORS as exc:
        raise DecodeError(f"{what}: cannot decode ({type(exc).__name__}: {exc}).") from exc
    if out.mode not in ("RGB", "RGBX"):
        out = to_rgb(out)
    if orient in ORIENTATION_TRANSPOSE:
        out = out.transpose(ORIENTATION_TRANSPOSE[orient])
    flip = p.flip
    if p.angle:
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            flip = False
        out = out.rotate(p.angle, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    _store(out, dst, flip)


def _pillow_resize(
    data: bytes,
    box: tuple[float, float, float, float],
    a: int,
    offset: int | None,
    height: int,
    spec: ImageSpec,
    what: str,
) -> Image.Image:
    """The Pillow path: ``Image.draft`` at scale 1/``a``, decoding stopped below the box.

    ``offset`` is the height field of a sequential JPEG's SOF (``None``: not lowered).
    """
    if spec.draft and offset is not None:
        # stop decoding below the crop: the resize filter's reach plus 4 (scaled) rows of
        # chroma-upsampling context keep every pixel the resize reads exactly as decoded
        reach = a * (max(1.0, (box[3] - box[1]) / (a * spec.size)) + 4)
        rows = math.ceil(box[3] + reach)
        if rows < height:
            data = truncate_rows(data, offset, rows)
    im = open_image(data, what=what)
    with im:
        if a > 1:
            w2, h2 = im.size
            res = im.draft(im.mode, (w2 // a, h2 // a))
            scale = w2 / res[1][2] if res is not None else 1.0
            box = (box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale)
        im.load()
        src = im if im.mode in _RESIZE_MODES else to_rgb(im)
        return _resize_box(src, spec.size, box)


def _shm_dir() -> str | None:
    """Where batch buffers shared with worker processes live: RAM-backed /dev/shm on Linux."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _augment_into(
    path: str,
    shape: tuple[int, ...],
    start: int,
    items: list[bytes],
    indices: list[int],
    spec: ImageSpec,
    seed: int,
    epoch: int,
    salt: int,
    field: str,
    native: bool = True,
) -> None:
    """Worker-process side of ``CPUTransform(processes=N)``: rows ``start..`` of the batch file."""
    out = np.memmap(path, np.uint8, "r+", shape=shape)
    try:
        # the slice's rows as one array: the native path writes them in place
        rows = np.ndarray((len(items), *shape[1:]), np.uint8, out, start * int(np.prod(shape[1:])))
        _decode_images(
            items, indices, spec, (seed, epoch, salt), field, rows,
            native_threads=1 if native else None,
        )  # fmt: skip
    finally:
        del out


def _decode_images(
    items: Any,
    indices: Any,
    spec: ImageSpec,
    seeds: tuple[int, int, int],
    field: str,
    out: np.ndarray,
    *,
    native_threads: int | None,
    pool: ThreadPoolExecutor | None = None,
) -> None:
    """Every image of ``items`` into ``out`` (``seeds``: seed, epoch, the transform's salt).

    The plain JPEGs in one native call on ``native_threads`` threads (None: none), the
    rest one by one (on ``pool`` when given). The first failure in batch order is
    raised, whichever path decoded it, once every image was tried.
    """
    seed, epoch, salt = seeds
    rest: list[int] = list(range(len(items)))
    failed: dict[int, DecodeError] = {}
    if native_threads is not None and _decode_batch is not None and rest:
        rest, failed = _native_batch(items, indices, spec, seeds, field, out, native_threads)

    def one(i: int) -> DecodeError | None:
        try:
            _one(items[i], spec, seed, epoch, int(indices[i]), salt, field, out[i])
        except DecodeError as exc:
            return exc
        return None

    errors = (
        list(pool.map(one, rest)) if pool is not None and len(rest) > 1 else [one(i) for i in rest]
    )
    failed.update({i: e for i, e in zip(rest, errors, strict=True) if e is not None})
    if failed:
        raise failed[min(failed)]


def _plan_spec(spec: ImageSpec) -> tuple[Any, ...]:
    """``spec`` as ``_jpegregion.plan_batch`` takes it."""
    rc = spec.random_crop
    if rc is not None:
        return (
            1,
            *map(float, rc.scale),
            *map(float, rc.ratio),
            1,
            spec.size,
            float(spec.flip_p),
            float(spec.max_degrees),
            bool(spec.draft),
        )
    assert spec.resize is not None
    return (
        0,
        0.0,
        0.0,
        1.0,
        1.0,
        spec.resize.shorter,
        spec.size,
        float(spec.flip_p),
        float(spec.max_degrees),
        bool(spec.draft),
    )


def _plan(
    items: Any, indices: Any, spec: ImageSpec, seeds: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each sample's (box, scale, flip) row and status (0: native) in one C call.

    None where the extension lacks it or refuses the spec: then the same in Python.
    """
    if _plan_batch is None:
        return None
    n = len(items)
    table = np.empty((n, 6), np.float64)
    status = np.empty(n, np.int8)
    idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64).reshape(-1))
    seed, epoch, salt = seeds
    try:
        _plan_batch(items, idx, _plan_spec(spec), seed, epoch, salt, table, status)
    except ValueError:
        return None
    return table, status


def _plan_in_python(
    items: Any, indices: Any, spec: ImageSpec, seeds: tuple[int, int, int]
) -> tuple[list[int], list[int], np.ndarray]:
    """:func:`_plan` in Python (the definition the C draws are held to in the tests)."""
    seed, epoch, salt = seeds
    rows: list[int] = []
    params: list[tuple[float, ...]] = []
    rest: list[int] = []
    for i in range(len(items)):
        hdr = jpeg_header(items[i])
        if hdr is None or hdr[3]:  # not a JPEG, or one with EXIF (its orientation)
            rest.append(i)
            continue
        p = sample_params(spec, hdr[0], hdr[1], seed, epoch, int(indices[i]), salt)
        if p.angle:
            rest.append(i)
            continue
        a = draft_scale(p.box, spec.size) if spec.draft else 1
        rows.append(i)
        params.append((*p.box, float(a), 1.0 if p.flip else 0.0))
    return rows, rest, np.asarray(params, np.float64).reshape(-1, 6)


def _native_batch(
    items: Any,
    indices: Any,
    spec: ImageSpec,
    seeds: tuple[int, int, int],
    field: str,
    out: np.ndarray,
    threads: int,
) -> tuple[list[int], dict[int, DecodeError]]:
    """The plain JPEGs of a batch through ``_jpegregion.decode_batch``, into ``out``.

    Returns the samples left for the per-image path (not a JPEG, EXIF-oriented,
    rotated, or a JPEG the native decoder does not handle) and the failures. Each
    sample's header, box, DCT scale and flip come from ``_jpegregion.plan_batch`` (the
    Python draws in C, ~0.3 us an image against ~8 us; :func:`_plan_in_python` where
    it is missing), so no Python runs per image; the decode runs without the GIL.
    """
    assert _decode_batch is not None
    planned = _plan(items, indices, spec, seeds)
    if planned is None:
        rows, rest, table = _plan_in_python(items, indices, spec, seeds)
    else:
        table, status = planned
        rows = np.flatnonzero(status == 0).tolist()
        rest = np.flatnonzero(status != 0).tolist()
        table = table[rows] if rest else table
    if not rows:
        return rest, {}
    whole = len(rows) == len(items)
    dst = out if whole else np.empty((len(rows), *spec.shape), np.uint8)
    res = _decode_batch(
        items if whole and isinstance(items, list) else [items[i] for i in rows],
        table,
        dst,
        threads,
        not _one_call_runs_horizontal_first(),  # the vertical box rounded as stock Pillow's
    )
    if not whole:
        out[rows] = dst
    failed: dict[int, DecodeError] = {}
    for i, r in zip(rows, res, strict=True):
        if r is None:
            continue
        if r == 1:  # CMYK, 12-bit...: the per-image path knows what to do
            rest.append(i)
            continue
        idx = int(indices[i])
        exc = DecodeError(f"sample {idx} (field {field!r}): cannot decode ({r}).")
        exc.row, exc.field, exc.indices = idx, field, [idx]
        failed[i] = exc
    return sorted(rest), failed


def _one(
    data: Any,
    spec: ImageSpec,
    seed: int,
    epoch: int,
    idx: int,
    salt: int,
    field: str,
    dst: np.ndarray,
) -> None:
    try:
        _augment(data, spec, seed, epoch, idx, salt, f"sample {idx} (field {field!r})", dst)
    except DecodeError as exc:
        exc.row, exc.field, exc.indices = idx, field, [idx]
        raise


class CPUTransform:
    """The loader's per-batch transform on the CPU: encoded bytes in, ``(B, S, S, 3)`` images out.

    Parameters
    ----------
    spec
        What to do to each image (:class:`ImageSpec`).
    image_field, label_field
        Batch fields holding the encoded bytes and the labels (``label_field=None``:
        no label output). ``image_field=None`` (the default) takes ``image``, or
        ``jpeg`` in a batch of a set built before the field was renamed.
    seed
        Salt mixed with the loader's ``(seed, epoch, index)`` per sample.
    threads
        Threads decoding the images of one batch. ``None`` (the default): the native
        batch path sizes its pool to share the cores available to the process
        (``os.sched_getaffinity``) among the batches in flight at once, i.e. the
        loader's worker threads that call this transform concurrently: 2 cores and
        ``Loader(num_workers=2)`` give each batch 1 thread, ``num_workers=1`` gives it
        2, so the two never oversubscribe the cores. An int fixes the pool size per
        batch (for the images the native path does not take, too: a Python thread
        pool; 1 decodes those in the calling thread).
    native
        Decode, crop, resize and pack a batch's JPEGs in one native call with the GIL
        released throughout (``_jpegregion.decode_batch``; default True where it was
        built). No Python runs per image, so a training loop holding the GIL beside
        the loader does not stall the decode. Pixels: identical to the per-image path
        on stock Pillow, within 1 (0.2% of values) on pillow-simd, whose resize rounds
        its coefficients differently. JPEGs with EXIF orientation, samples with a
        rotation, other formats and CMYK take the per-image path. False: every image
        takes the per-image path (Pillow's resize).
    processes
        Images of one batch decoded in this many worker processes (0: none, the
        default). Decoding releases the GIL, but the Python around each image does
        not: on a 2-4 core machine the loader's threads scale well, on 8 or more
        cores they stall on the GIL and worker processes are faster. Outputs are
        identical either way (each sample's augmentation depends only on its seed,
        epoch and index). The processes start with ``forkserver``: a script using
        them needs the usual ``if __name__ == "__main__":`` guard. Each batch is cut
        into ``processes`` slices; the images come back through a file in
        ``/dev/shm``, not a pipe.

    The output is ``{"image": uint8 (B, size, size, 3) (HWC, channels last),
    "label": int64 (B,)}``; ``float32`` with ``Normalize`` in the spec.
    """

    def __init__(
        self,
        spec: ImageSpec,
        *,
        image_field: str | None = None,
        label_field: str | None = "label",
        seed: int = 0,
        threads: int | None = None,
        processes: int = 0,
        native: bool = True,
    ) -> None:
        if not isinstance(spec, ImageSpec):
            raise ConfigError(
                f"spec must be a datafuel.vision.ImageSpec. Got {type(spec).__name__}."
            )
        if threads is not None:
            check_int("threads", threads)
        check_int("processes", processes, low=0)
        if not isinstance(native, bool):
            raise ConfigError(f"native must be True or False. Got {native!r}.")
        if processes and threads is not None and threads > 1:
            raise ConfigError(
                f"use threads or processes, not both (threads={threads}, processes={processes})."
            )
        self.spec = spec
        self.image_field = image_field
        self.label_field = label_field
        self.seed = int(seed)
        self.threads = threads
        self.processes = processes
        self.native = native and _decode_batch is not None
        self._in_flight = 0  # calls running now (the loader's worker threads)
        out_spec = dict(spec.output_spec)
        if label_field is not None:
            out_spec["label"] = ("int64", ())
        self.output_spec: Mapping[str, tuple[str, tuple[int, ...]]] = out_spec
        self._pool: ThreadPoolExecutor | ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        norm = spec.normalize
        self._mean = None if norm is None else np.asarray(norm.mean, np.float32)
        self._inv_std = None if norm is None else (1.0 / np.asarray(norm.std, np.float32))

    def __repr__(self) -> str:
        how = f"processes={self.processes}" if self.processes else f"threads={self.threads}"
        return f"CPUTransform({self.spec!r}, {how}, native={self.native})"

    def _executor(self) -> ThreadPoolExecutor | ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                if self.processes:
                    methods = multiprocessing.get_all_start_methods()
                    ctx = multiprocessing.get_context(
                        "forkserver" if "forkserver" in methods else "spawn"
                    )
                    self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx)
                else:
                    self._pool = ThreadPoolExecutor(
                        self.threads or 1, thread_name_prefix="datafuel-vision"
                    )
                # a transform dropped without close() still stops its workers
                weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
            return self._pool

    def close(self) -> None:
        """Stop the internal thread or process pool (if any)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __call__(self, batch: Mapping[str, Any], info: Any) -> dict[str, Any]:
        field = self.image_field if self.image_field is not None else image_field_of(batch)
        items = _batch_field(
            batch,
            field,
            "pass image_field= to name the encoded-image field"
            + (
                f" (sets built before it was {IMAGE_FIELD!r} call it {LEGACY_IMAGE_FIELD!r})."
                if self.image_field is None
                else "."
            ),
        )
        indices = np.asarray(info.indices).reshape(-1)
        n = len(items)
        if len(indices) != n:
            raise SchemaError(f"BatchInfo has {len(indices)} indices for a batch of {n} images.")
        seed, epoch = int(info.seed), int(info.epoch)
        if self.processes and n > 0:
            out = self._in_processes(items, indices, seed, epoch, field)
        else:
            with self._lock:
                self._in_flight += 1
            try:
                out = self._in_threads(items, indices, seed, epoch, field)
            finally:
                with self._lock:
                    self._in_flight -= 1
        result: dict[str, Any] = {"image": out}
        if self._mean is not None and self._inv_std is not None:
            result["image"] = (out.astype(np.float32) - self._mean) * self._inv_std
        if self.label_field is not None:
            labels = _batch_field(
                batch, self.label_field, "pass label_field=None for unlabelled images."
            )
            result["label"] = np.asarray(labels, dtype=np.int64).reshape(n)
        return result

    def native_threads(self) -> int:
        """The native pool size for the next batch (see ``threads``)."""
        if self.threads is not None:
            return self.threads
        with self._lock:
            in_flight = max(1, self._in_flight)
        return max(1, available_cores() // in_flight)

    def _in_threads(
        self, items: Any, indices: np.ndarray, seed: int, epoch: int, field: str
    ) -> np.ndarray:
        out = np.empty((len(items), *self.spec.shape), np.uint8)
        pool = None
        if self.threads is not None and self.threads > 1:
            pool = cast(ThreadPoolExecutor, self._executor())  # processes=0 here
        _decode_images(
            items, indices, self.spec, (seed, epoch, self.seed), field, out,
            native_threads=self.native_threads() if self.native else None, pool=pool,
        )  # fmt: skip
        return out

    def _in_processes(
        self, items: Any, indices: np.ndarray, seed: int, epoch: int, field: str
    ) -> np.ndarray:
        n = len(items)
        shape = (n, *self.spec.shape)
        pool = self._executor()
        fd, path = tempfile.mkstemp(prefix="datafuel-images-", dir=_shm_dir())
        try:
            os.ftruncate(fd, int(np.prod(shape)))
            os.close(fd)
            cuts = np.linspace(0, n, min(self.processes, n) + 1).astype(int)
            futures = [
                pool.submit(
                    _augment_into,
                    path,
                    shape,
                    int(a),
                    [bytes(items[i]) for i in range(a, b)],
                    [int(i) for i in indices[a:b]],
                    self.spec,
                    seed,
                    epoch,
                    self.seed,
                    field,
                    self.native,
                )
                for a, b in itertools.pairwise(cuts.tolist())
            ]
            wait(futures)
            for f in futures:  # the first failure in batch order, as the in-thread path
                f.result()
            return np.fromfile(path, np.uint8).reshape(shape)
        finally:
            os.unlink(path)


def _batch_field(batch: Mapping[str, Any], name: str, hint: str) -> Any:
    """``batch[name]``, or a SchemaError naming the field, the fields there are, and the fix."""
    try:
        return batch[name]
    except KeyError:
        raise SchemaError(
            f"the batch has no field {name!r} (fields: {sorted(batch)}); {hint}", field=name
        ) from None
