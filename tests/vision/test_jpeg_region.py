"""The region decoder (``_jpegregion``, libjpeg-turbo crop/skip): same pixels as a whole
decode, the CPU backend's output within resampling rounding of the Pillow path, and
clear errors for bad data."""

from __future__ import annotations

import io
import math
import random
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from image_samples import exif_jpeg, jpeg, pattern
from PIL import Image

import datafuel.vision._cpu as cpu_backend
from datafuel.errors import DecodeError
from datafuel.vision import ImageSpec, augment_image, region_decode_available

jr = pytest.importorskip(
    "datafuel.vision._jpegregion", reason="the region decoder extension is not built here"
)


def encoded(width: int, height: int, *, subsampling: int, progressive: bool, gray: bool) -> bytes:
    im = Image.fromarray(pattern(width, height, width + subsampling))
    if gray:
        im = im.convert("L")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, subsampling=subsampling, progressive=progressive)
    return buf.getvalue()


def whole(data: bytes, a: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if a > 1:
            im.draft(im.mode, (im.size[0] // a, im.size[1] // a))
        return np.asarray(im.convert("RGB"))


def rgb(pixels: bytes, height: int, width: int) -> np.ndarray:
    return np.frombuffer(pixels, np.uint8).reshape(height, width, 4)[..., :3]


def test_the_extension_is_what_the_backend_uses() -> None:
    assert region_decode_available() is True
    assert cpu_backend._decode_region is jr.decode_region
    assert jr.LIBJPEG_VERSION >= 62


@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_region_pixels_equal_a_whole_decode(
    subsampling: int, progressive: bool, gray: bool
) -> None:
    rng = random.Random(subsampling * 4 + progressive * 2 + gray)
    for width, height in [(500, 375), (333, 221), (1280, 720)]:
        data = encoded(width, height, subsampling=subsampling, progressive=progressive, gray=gray)
        for a in (1, 2, 4, 8):
            full = whole(data, a)
            sh, sw = full.shape[:2]
            for _ in range(6):
                x, y = rng.randrange(sw - 1), rng.randrange(sh - 1)
                w, h = rng.randrange(1, sw - x + 1), rng.randrange(1, sh - y + 1)
                pixels, left, top, cw, ch = jr.decode_region(data, x, y, w, h, a)
                # the rows asked for; columns widened to libjpeg's iMCU grid, never narrowed
                assert (top, ch) == (y, h)
                assert left <= x < left + 32 and left + cw >= x + w
                assert len(pixels) == cw * ch * 4
                rgbx = np.frombuffer(pixels, np.uint8).reshape(ch, cw, 4)
                assert (rgbx[..., 3] == 255).all()
                got = rgbx[..., :3]
                ref = full[top : top + ch, left : left + cw]
                # chroma upsampling at a cut edge has no neighbour: only that one column may differ
                lo = 1 if left > 0 else 0
                hi = cw - 1 if left + cw < sw else cw
                np.testing.assert_array_equal(got[:, lo:hi], ref[:, lo:hi])
                assert np.abs(got.astype(int) - ref).max() <= 64


def test_regions_are_clipped_to_the_image() -> None:
    data = jpeg(200, 100)
    full = whole(data, 1)
    pixels, left, top, cw, ch = jr.decode_region(data, -10, -5, 10_000, 10_000, 1)
    assert (left, top, cw, ch) == (0, 0, 200, 100)
    np.testing.assert_array_equal(rgb(pixels, 100, 200), full)
    with pytest.raises(ValueError, match="outside the image"):
        jr.decode_region(data, 300, 0, 10, 10, 1)
    with pytest.raises(ValueError, match="scale_denom must be 1, 2, 4 or 8"):
        jr.decode_region(data, 0, 0, 10, 10, 3)
    with pytest.raises(ValueError, match="empty region"):
        jr.decode_region(data, 0, 0, 0, 10, 1)
    with pytest.raises(TypeError):
        jr.decode_region("not bytes", 0, 0, 10, 10, 1)


def test_huge_regions_never_overflow() -> None:
    """``y + h`` past LONG_MAX once wrapped negative and skipped the clamp, so the decode
    wrote far past its buffer; a start beyond the image is now outside before any sum."""
    data = jpeg(200, 100)
    with pytest.raises(ValueError, match="outside the image"):
        jr.decode_region(data, 0, 2**62, 64, 2**62 + 1, 1)
    with pytest.raises(ValueError, match="outside the image"):
        jr.decode_region(data, 2**62, 0, 2**62 + 1, 64, 1)
    # a start inside with a huge size is clamped to the image
    pixels, left, top, cw, ch = jr.decode_region(data, 0, 90, 2**62, 2**62 + 1, 1)
    assert (left, top, cw, ch) == (0, 90, 200, 10)
    assert len(pixels) == 200 * 10 * 4


def test_unsupported_colour_spaces_return_none_and_the_backend_falls_back() -> None:
    rgb = Image.fromarray(pattern(160, 120, 3))
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, "JPEG", quality=90)
    cmyk = buf.getvalue()
    assert jr.decode_region(cmyk, 0, 0, 50, 50, 1) is None
    spec = ImageSpec.train(64)
    out = augment_image(cmyk, spec, index=2)
    assert out.shape == (64, 64, 3) and out.std() > 5


def test_bad_data_raises_naming_libjpeg_message() -> None:
    data = jpeg(300, 200, 11)
    with pytest.raises(ValueError, match=r"libjpeg: Not a JPEG file"):
        jr.decode_region(b"this is not an image, just text\n" * 4, 0, 0, 10, 10, 1)
    # cut in the middle: the rows below the cut are not there
    with pytest.raises(ValueError, match=r"libjpeg: .*(end|empty)"):
        jr.decode_region(data[: len(data) // 2], 0, 150, 300, 50, 1)
    # ...while a region above the cut decodes, exactly (the rest of the file is never read)
    pixels, left, top, cw, ch = jr.decode_region(data[: len(data) // 2], 0, 0, 300, 40, 1)
    assert (left, top, cw, ch) == (0, 0, 300, 40)
    np.testing.assert_array_equal(rgb(pixels, ch, cw), whole(data, 1)[:40])
    # a corrupt header
    bad = bytearray(data)
    bad[2:40] = b"\xff" * 38
    with pytest.raises(ValueError, match="libjpeg"):
        jr.decode_region(bytes(bad), 0, 0, 10, 10, 1)


def test_backend_names_the_sample_when_libjpeg_fails() -> None:
    data = jpeg(500, 375, 5)
    cut = data[: len(data) // 3]
    spec = ImageSpec.eval(224)  # a centre crop reaches far below the cut
    with pytest.raises(DecodeError, match=r"sample 7 .*cannot decode \(libjpeg"):
        augment_image(cut, spec, index=7, what="sample 7 (field 'jpeg')")


@pytest.mark.parametrize(
    "spec",
    [ImageSpec.train(224), ImageSpec.train(96, scale=(0.05, 0.4)), ImageSpec.eval(224)],
    ids=["train224", "train96-small", "eval224"],
)
def test_backend_output_matches_the_pillow_path(
    spec: ImageSpec, images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same decoded pixels and the same resize (on the region, with the box shifted): the
    same output, on pillow-simd and on stock Pillow (see test_resize_of_a_region_...)."""
    kinds = ["baseline", "tall", "large", "progressive", "gray", "exif6", "exif3", "small"]
    samples = {k: images[k] for k in kinds}
    samples["exif8_large"] = exif_jpeg(1600, 1000, 8, 4)
    samples["420_wide"] = jpeg(1920, 1080, 9)
    region = {(k, i): augment_image(d, spec, index=i) for k, d in samples.items() for i in range(6)}
    calls: list[int] = []
    real = jr.decode_region

    def counting(*args: object) -> object:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(cpu_backend, "_decode_region", None)
    for (kind, i), got in region.items():
        ref = augment_image(samples[kind], spec, index=i)
        np.testing.assert_array_equal(got, ref, err_msg=f"{kind} {i}")
    monkeypatch.setattr(cpu_backend, "_decode_region", counting)
    for d in samples.values():
        augment_image(d, spec, index=0)
    assert len(calls) == len(samples)  # every one of these JPEGs took the region path


@pytest.mark.parametrize("size", [224, 96])
def test_resize_of_a_region_equals_the_resize_of_the_whole_image(size: int) -> None:
    """Stock Pillow 13 orders its two resize passes by the source's size (pillow-simd:
    always horizontal first), and each pass rounds to 8 bits: the same box resized in a
    narrow region and in the whole image differed by 1 in ~18% of values
    (``train224`` of a 500x375 JPEG, box (177, 72, 403, 343), region 249 wide).
    ``_resize_box`` fixes the order and rounds the box as Pillow does before shifting it."""
    im = Image.open(io.BytesIO(jpeg(500, 375, 1))).convert("RGBX")
    rng = random.Random(size)
    B = Image.Resampling.BILINEAR
    for _ in range(40):
        x0, y0 = rng.uniform(0, 250), rng.uniform(0, 180)
        x1, y1 = x0 + rng.uniform(60, 500 - x0), y0 + rng.uniform(60, 375 - y0)
        box = (x0, y0, x1, y1)
        whole = np.asarray(cpu_backend._resize_box(im, size, box))
        # the reference order: horizontal pass, then vertical, one call each
        f = [float(np.float32(v)) for v in box]
        wide = im.resize((size, im.height), B, box=(f[0], 0, f[2], im.height))
        np.testing.assert_array_equal(
            whole, np.asarray(wide.resize((size, size), B, box=(0, f[1], size, f[3])))
        )
        for _ in range(3):  # regions of every width around the box, as the region decoder returns
            left, top = (
                rng.randint(0, math.floor(x0) - 2 if x0 >= 2 else 0),
                rng.randint(0, math.floor(y0) - 2 if y0 >= 2 else 0),
            )
            right, bottom = rng.randint(math.ceil(x1) + 2, 502), rng.randint(math.ceil(y1) + 2, 377)
            region = im.crop((left, top, min(500, right), min(375, bottom)))
            got = np.asarray(cpu_backend._resize_box(region, size, box, (left, top)))
            np.testing.assert_array_equal(
                got, whole, err_msg=f"{box} in region at {(left, top)} {region.size}"
            )


def test_decodes_run_in_parallel_threads_with_identical_results() -> None:
    data = [jpeg(640, 480, s) for s in range(4)]
    expect = [jr.decode_region(d, 17, 33, 400, 300, 1) for d in data]
    results: list[list[object]] = [[] for _ in range(4)]

    def work(t: int) -> None:
        for _ in range(10):
            results[t].append(jr.decode_region(data[t], 17, 33, 400, 300, 1))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in range(4):
        assert all(r == expect[t] for r in results[t])


def cjpeg(sample: str, width: int = 500, height: int = 375) -> bytes:
    """A JPEG with the given luma sampling, written by libjpeg-turbo's cjpeg (Pillow cannot
    write 4x2 or 2x4)."""
    tool = shutil.which("cjpeg")
    if tool is None:
        pytest.skip("cjpeg not found (Debian: apt-get install libjpeg-turbo-progs)")
    buf = io.BytesIO()
    Image.fromarray(pattern(width, height, width + 3)).save(buf, "PPM")
    return subprocess.run(
        [tool, "-quality", "90", "-sample", sample],
        input=buf.getvalue(),
        capture_output=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("sample", ["4x2", "2x4", "4x1", "1x4", "2x2"])
def test_luma_sampling_4x2_and_2x4_decode_to_pillows_pixels(sample: str) -> None:
    """libjpeg-turbo 2.1.5's column crop is wrong for 4x2 / 2x4 at scale 1/2 and 1/4 (up to
    255 off); those decode the full width instead, and every region equals Pillow's."""
    data = cjpeg(sample)
    with Image.open(io.BytesIO(data)) as im:
        h_samp, v_samp = im.layer[0][1:3]  # type: ignore[attr-defined]
    assert f"{h_samp}x{v_samp}" == sample
    rng = random.Random(sample)
    for a in (1, 2, 4, 8):
        full = whole(data, a)
        sh, sw = full.shape[:2]
        for _ in range(12):
            x, y = rng.randrange(sw - 1), rng.randrange(sh - 1)
            w, h = rng.randrange(1, sw - x + 1), rng.randrange(1, sh - y + 1)
            pixels, left, top, cw, ch = jr.decode_region(data, x, y, w, h, a)
            assert (top, ch) == (y, h) and left <= x and left + cw >= x + w
            if sample in ("4x2", "2x4") and a in (2, 4):
                assert (left, cw) == (0, sw)  # the full width: no column crop
            got = rgb(pixels, ch, cw)
            ref = full[top : top + ch, left : left + cw]
            lo = 1 if left > 0 else 0
            hi = cw - 1 if left + cw < sw else cw
            np.testing.assert_array_equal(got[:, lo:hi], ref[:, lo:hi])


OVERFLOW_REPRODUCERS = """
import io, sys
from PIL import Image
import datafuel.vision._jpegregion as jr
buf = io.BytesIO(); Image.new("RGB", (200, 100), (9, 99, 199)).save(buf, "JPEG"); data = buf.getvalue()
for args in [(0, 2**62, 64, 2**62 + 1, 1), (2**62, 0, 2**62 + 1, 64, 1), (-2**62, -2**62, 2**63 - 1, 2**63 - 1, 2),
             (0, 2**63 - 1, 2**63 - 1, 2**63 - 1, 8), (199, 99, 2**63 - 1, 2**63 - 1, 4)]:
    try:
        out = jr.decode_region(data, *args)
        assert len(out[0]) == out[3] * out[4] * 4, args
    except ValueError as exc:
        assert "outside the image" in str(exc), exc
print("ok")
"""


def test_overflow_reproducers_raise_in_a_subprocess_that_exits_cleanly() -> None:
    """A write past the buffer would crash the interpreter (or corrupt it): run them where a
    crash shows as an exit status, not as this test process dying."""
    proc = subprocess.run(
        [sys.executable, "-c", OVERFLOW_REPRODUCERS], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.strip() == "ok"
