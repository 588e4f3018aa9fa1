"""The native batch path (``_jpegregion.decode_batch``): every image of a batch decoded,
cropped, resized and packed in one call without the GIL, equal to the per-image path
(identical on stock Pillow, within 1 on pillow-simd), with per-sample errors and the
per-image path for what it does not take."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from image_samples import broken, exif_jpeg, jpeg, pattern, variety
from PIL import Image

import datafuel.vision._cpu as cpu
from datafuel.errors import DecodeError
from datafuel.loaders import BatchInfo
from datafuel.vision import CPUTransform, ImageSpec, batch_decode_available, pil_build

jr = pytest.importorskip("datafuel.vision._jpegregion", reason="the extension is not built")
if not batch_decode_available():  # pragma: no cover - built without it
    pytest.skip("decode_batch is not in this build", allow_module_level=True)

SIMD = bool(pil_build()["simd"])


def encoded(width: int, height: int, *, subsampling: int, progressive: bool, gray: bool) -> bytes:
    im = Image.fromarray(pattern(width, height, width + subsampling))
    if gray:
        im = im.convert("L")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, subsampling=subsampling, progressive=progressive)
    return buf.getvalue()


def both_paths(items: list[bytes], spec: ImageSpec, threads: int = 2) -> tuple[np.ndarray, ...]:
    n = len(items)
    idx = np.arange(7, 7 + n)
    native = np.zeros((n, *spec.shape), np.uint8)
    single = np.zeros((n, *spec.shape), np.uint8)
    cpu._decode_images(items, idx, spec, (3, 1, 5), "image", native, native_threads=threads)
    cpu._decode_images(items, idx, spec, (3, 1, 5), "image", single, native_threads=None)
    return native, single


def assert_close(native: np.ndarray, single: np.ndarray) -> None:
    d = np.abs(native.astype(int) - single)
    if SIMD:  # pillow-simd rounds its resize coefficients its own way: by 1, rarely
        assert d.max() <= 1 and (d > 0).mean() < 0.01, (d.max(), (d > 0).mean())
    else:  # stock Pillow's arithmetic, exactly
        assert d.max() == 0, d.max()


@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_batch_equals_the_per_image_path(subsampling: int, progressive: bool, gray: bool) -> None:
    sizes = [(500, 375), (375, 500), (333, 221), (1920, 1080), (64, 48)]
    items = [
        encoded(w, h, subsampling=subsampling, progressive=progressive, gray=gray) for w, h in sizes
    ] * 3  # several crops (and DCT scales 1, 2, 4, 8) of each
    for spec in (ImageSpec.train(96), ImageSpec.train(160, scale=(0.9, 1.0)), ImageSpec.eval(64)):
        native, single = both_paths(items, spec)
        assert_close(native, single)


def test_flips_scales_and_sizes_are_all_exercised() -> None:
    items = [jpeg(1920, 1080, seed=s) for s in range(24)]
    scales, flips = set(), set()
    for size in (56, 224):
        spec = ImageSpec.train(size, scale=(0.02, 1.0))
        for i in range(len(items)):
            p = cpu.sample_params(spec, 1920, 1080, 3, 1, 7 + i, 5)
            scales.add(cpu.draft_scale(p.box, size))
            flips.add(p.flip)
        native, single = both_paths(items, spec)
        assert_close(native, single)
    assert scales == {1, 2, 4, 8} and flips == {True, False}


def test_what_the_native_path_does_not_take_goes_per_image() -> None:
    kinds = variety()  # CMYK, EXIF-rotated, PNG, GIF, BMP among plain JPEGs
    names = sorted(kinds)
    items = [kinds[k] for k in names]
    spec = ImageSpec.train(80, rotate_degrees=0)
    native, single = both_paths(items, spec)
    assert_close(native, single)
    # rotated samples too
    spec = ImageSpec.train(80, rotate_degrees=15)
    native, single = both_paths(items, spec)
    assert_close(native, single)


def test_a_corrupt_sample_names_itself_and_the_rest_are_decoded() -> None:
    good = [jpeg(300, 200, seed=s) for s in range(6)]
    bad = broken()["truncated.jpg"]
    items = [*good[:3], bad, *good[3:]]
    t = CPUTransform(ImageSpec.train(64))
    info = BatchInfo(indices=np.arange(40, 47), epoch=0, seed=0, batch_index=0)
    with pytest.raises(DecodeError) as ei:
        t({"image": items, "label": np.zeros(7, np.int64)}, info)
    assert ei.value.row == 43 and ei.value.indices == [43] and ei.value.field == "image"
    assert "sample 43 (field 'image'): cannot decode (libjpeg: " in str(ei.value)
    # the first failure in batch order, whichever path met it: a broken PNG (per-image)
    # before the broken JPEG (native)
    items2 = [good[0], broken()["garbage.png"], bad]
    info2 = BatchInfo(indices=np.arange(40, 43), epoch=0, seed=0, batch_index=0)
    with pytest.raises(DecodeError) as ei:
        t({"image": items2, "label": np.zeros(3, np.int64)}, info2)
    assert ei.value.row == 41


def test_the_transform_takes_the_native_path_and_can_be_told_not_to(monkeypatch) -> None:
    calls: list[int] = []
    real = cpu._decode_batch

    def spy(items, params, out, threads, shifted_rows):
        calls.append(threads)
        return real(items, params, out, threads, shifted_rows)

    monkeypatch.setattr(cpu, "_decode_batch", spy)
    items = [jpeg(320, 240, seed=s) for s in range(4)]
    batch = {"image": items, "label": np.zeros(4, np.int64)}
    info = BatchInfo(indices=np.arange(4), epoch=0, seed=0, batch_index=0)
    a = CPUTransform(ImageSpec.train(48))(batch, info)["image"]
    assert calls == [cpu.available_cores()]  # one call, the process's cores (one batch in flight)
    b = CPUTransform(ImageSpec.train(48), native=False)(batch, info)["image"]
    assert len(calls) == 1
    assert_close(a, b)
    CPUTransform(ImageSpec.train(48), threads=3)(batch, info)
    assert calls[-1] == 3


def test_concurrent_batches_share_the_cores() -> None:
    t = CPUTransform(ImageSpec.train(48))
    cores = cpu.available_cores()
    assert t.native_threads() == cores
    t._in_flight = 2
    assert t.native_threads() == max(1, cores // 2)
    t._in_flight = 10 * cores
    assert t.native_threads() == 1


def test_exif_and_rotation_samples_equal_the_per_image_path() -> None:
    items = [exif_jpeg(320, 240, o, seed=o) for o in range(1, 9)] + [jpeg(320, 240, seed=9)]
    native, single = both_paths(items, ImageSpec.train(64))
    assert_close(native, single)


def _bad_batch_calls():
    data = [jpeg(64, 48, seed=1)]
    ok = np.array([[0.0, 0.0, 64.0, 48.0, 1.0, 0.0]])
    out = np.zeros((1, 16, 16, 3), np.uint8)
    yield (data, ok[:, :5].copy(), out, 1), ValueError  # params shape
    yield (data, ok.astype(np.float32), out, 1), ValueError
    yield (data, ok, np.zeros((1, 16, 8, 3), np.uint8), 1), ValueError  # not square
    yield (data, ok, np.zeros((1, 16, 16, 3), np.float32), 1), ValueError
    yield (data, ok, np.zeros((2, 16, 16, 3), np.uint8), 1), ValueError  # B mismatch
    yield (data, ok, out, 0), ValueError  # threads
    ro = out.copy()
    ro.flags.writeable = False
    yield (data, ok, ro, 1), (TypeError, ValueError, BufferError)
    for row in (
        [np.nan, 0, 64, 48, 1, 0],
        [0, 0, np.inf, 48, 1, 0],
        [10, 0, 5, 48, 1, 0],  # x1 < x0
        [0, 0, 64, 48, 3, 0],  # scale 3
        [0, 0, 64, 48, 1, 0.5],  # flip
        [0, 0, 2.0**40, 48, 1, 0],
    ):
        yield (data, np.array([row], np.float64), out, 1), ValueError
    yield (["not bytes"], ok, out, 1), TypeError
    yield (42, ok, out, 1), TypeError


@pytest.mark.parametrize("args,exc", list(_bad_batch_calls()))
def test_malformed_batch_arguments_raise_and_write_nothing(args, exc) -> None:
    out = args[2]
    before = out.copy()
    with pytest.raises(exc):
        jr.decode_batch(*args)
    np.testing.assert_array_equal(out, before)


def test_boxes_outside_or_past_the_image_are_per_sample_errors_not_crashes() -> None:
    """Run where a write past a buffer shows as an exit status (a subprocess)."""
    code = """
import io, numpy as np
from PIL import Image
import datafuel.vision._jpegregion as jr
buf = io.BytesIO(); Image.new("RGB", (200, 100), (9, 99, 199)).save(buf, "JPEG"); d = buf.getvalue()
rows = [[300, 0, 400, 50, 1, 0], [0, 150, 50, 200, 1, 0], [-1e9, -1e9, 1e9, 1e9, 8, 1],
        [199.5, 99.5, 1e9, 1e9, 2, 0], [0, 0, 200, 100, 8, 1], [-5, -5, 1, 1, 1, 0],
        [0.1, 0.1, 0.2, 0.2, 1, 0], [0, 0, 200, 100, 1, 1]]
out = np.zeros((len(rows), 32, 32, 3), np.uint8)
res = jr.decode_batch([d] * len(rows), np.array(rows, np.float64), out, 3)
assert res[0] == res[1] == "the crop box lies outside the image", res
for i in (2, 3, 5):  # partly outside: refused as Pillow's resize refuses such a box
    assert res[i].startswith("the crop box (") and res[i].endswith(") exceeds the image"), res
assert res[4] is None and res[6] is None and res[7] is None, res
assert (out[7] == out[7][0, 0]).all() and abs(int(out[7][0, 0, 2]) - 199) <= 2
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.startswith("ok")


def _header_only(width: int, height: int, *, app1: bool = False, sof: int = 0xC0) -> bytes:
    """The markers of a JPEG up to its SOF (all the planners read), for any size."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"\xff\xe1\x00\x08Exif\x00\x00" if app1 else b""
    body = bytes([8, height >> 8, height & 255, width >> 8, width & 255, 1, 1, 0x11, 0])
    return b"\xff\xd8" + app0 + exif + bytes([0xFF, sof, 0, len(body) + 2]) + body


def _specs():
    from datafuel.vision import CenterCrop, HorizontalFlip, RandomResizedCrop, Resize, Rotate

    yield ImageSpec([RandomResizedCrop(224), HorizontalFlip(0.5)])
    yield ImageSpec([RandomResizedCrop(64, scale=(0.5, 0.9), ratio=(0.2, 5.0))], draft=False)
    yield ImageSpec([RandomResizedCrop(32, scale=(1e-6, 1.0))])
    yield ImageSpec([RandomResizedCrop(100), HorizontalFlip(0.3), Rotate(10)])
    yield ImageSpec.eval(224)
    yield ImageSpec([Resize(80), CenterCrop(64), HorizontalFlip(1.0)])


@pytest.mark.parametrize("spec", list(_specs()), ids=lambda s: repr(s.ops))
def test_the_c_planner_draws_the_python_boxes(spec) -> None:
    # every size from thin strips to 64k-pixel sides (the 10-try loop's fallback too),
    # EXIF and non-JPEG samples, odd seeds: rows, statuses and boxes equal bit for bit
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 4000), (4000, 1), (65535, 65535), (3, 7), (500, 375), (375, 500)]
    sizes += [tuple(int(v) for v in rng.integers(1, 5000, 2)) for _ in range(300)]
    items = [_header_only(w, h) for w, h in sizes]
    items += [_header_only(640, 480, app1=True), b"\x89PNG\r\n\x1a\n", b"", _header_only(9, 9)[:20]]
    items.append(_header_only(300, 200, sof=0xC2))  # progressive: planned like any JPEG
    indices = rng.integers(-(2**40), 2**40, len(items))
    for seeds in ((0, 0, 0), (7, 3, 12345), (-1, 2**70, -(2**63))):
        table, status = cpu._plan(items, indices, spec, seeds)
        rows, rest, want = cpu._plan_in_python(items, indices, spec, seeds)
        assert np.flatnonzero(status == 0).tolist() == rows
        assert np.flatnonzero(status != 0).tolist() == rest
        np.testing.assert_array_equal(table[rows], want)
    assert len(rest) >= 4  # the EXIF, PNG, empty and cut-short samples go per image


def test_the_planner_refuses_malformed_arguments() -> None:
    items = [_header_only(50, 40)] * 3
    good = (1, 0.08, 1.0, 0.75, 1.333, 1, 32, 0.5, 0.0, True)
    t, s = np.zeros((3, 6)), np.zeros(3, np.int8)
    idx = np.arange(3, dtype=np.int64)
    for args, exc in (
        ((items, idx, good, 0, 0, 0, t[:2].copy(), s), ValueError),
        ((items, idx[:2].copy(), good, 0, 0, 0, t, s), ValueError),
        ((items, idx, good, 0, 0, 0, t, np.zeros(3, np.int64)), ValueError),
        (
            (items, idx, (1, 0.08, float("nan"), 0.75, 1.3, 1, 32, 0.5, 0.0, True), 0, 0, 0, t, s),
            ValueError,
        ),
        ((items, idx, (0, 0, 0, 1, 1, 0, 32, 0.5, 0.0, True), 0, 0, 0, t, s), ValueError),
        ((items, idx, good[:-1], 0, 0, 0, t, s), TypeError),
        (
            ([*items, 3], np.arange(4), good, 0, 0, 0, np.zeros((4, 6)), np.zeros(4, np.int8)),
            TypeError,
        ),
        ((items, idx, good, "seed", 0, 0, t, s), TypeError),
    ):
        with pytest.raises(exc):
            jr.plan_batch(*args)
