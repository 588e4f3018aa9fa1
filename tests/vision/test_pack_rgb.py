"""The RGBX-to-RGB packer (``_pack.pack_rgb``): the pixels Pillow gives, mirrored or not,
the CPU backend's output unchanged without it, and every size checked before a write."""

from __future__ import annotations

import numpy as np
import pytest
from image_samples import pattern
from PIL import Image

import datafuel.vision._cpu as cpu_backend
from datafuel.vision import ImageSpec, augment_image

pk = pytest.importorskip("datafuel.vision._pack", reason="the packer extension is not built here")


def test_the_extension_is_what_the_backend_uses() -> None:
    assert cpu_backend._pack_rgb is pk.pack_rgb


@pytest.mark.parametrize("flip", [False, True])
def test_pack_rgb_packs_and_mirrors_pillow_pixels(flip: bool) -> None:
    rgb = pattern(37, 23, 5)  # odd sizes: no alignment luck
    im = Image.fromarray(rgb).convert("RGBX")
    dst = np.zeros((23, 37, 3), np.uint8)
    pk.pack_rgb(*im.__arrow_c_array__(), dst, 37, 23, flip)
    np.testing.assert_array_equal(dst, rgb[:, ::-1] if flip else rgb)


def test_pack_rgb_refuses_what_it_cannot_pack() -> None:
    im = Image.fromarray(pattern(8, 6)).convert("RGBX")
    with pytest.raises(ValueError, match="not an RGBX image"):
        pk.pack_rgb(
            *im.convert("L").__arrow_c_array__(), np.zeros((6, 8, 3), np.uint8), 8, 6, False
        )
    with pytest.raises(ValueError, match="bytes in the output"):
        pk.pack_rgb(*im.__arrow_c_array__(), np.zeros((6, 7, 3), np.uint8), 8, 6, False)
    with pytest.raises(ValueError, match="in the image"):
        pk.pack_rgb(
            *im.__arrow_c_array__(), np.zeros((6, 8, 3), np.uint8), 6, 8 * 6 // 6 + 2, False
        )
    with pytest.raises(TypeError):  # read-only output
        pk.pack_rgb(*im.__arrow_c_array__(), bytes(6 * 8 * 3), 8, 6, False)
    with pytest.raises(ValueError):  # not capsules
        pk.pack_rgb(object(), object(), np.zeros((6, 8, 3), np.uint8), 8, 6, False)
    with pytest.raises(ValueError, match="bytes in the output"):  # not C-contiguous
        pk.pack_rgb(*im.__arrow_c_array__(), np.zeros((6, 16, 3), np.uint8)[:, ::2], 8, 6, False)


def test_pack_rgb_refuses_sizes_whose_product_overflows() -> None:
    """(2**61 + 8) * 8 pixels wraps to 64 in 64 bits, and * 3 bytes to 192: once accepted
    for an 8x8 image and a 192-byte output, then rows of 2**61 pixels were written."""
    im = Image.fromarray(pattern(8, 8)).convert("RGBX")
    dst = np.zeros((8, 8, 3), np.uint8)
    for width, height in [(2**61 + 8, 8), (8, 2**61 + 8), (2**16 + 1, 1), (1, 2**16 + 1)]:
        with pytest.raises(ValueError, match=r"each must be in \[1, 65536\]"):
            pk.pack_rgb(*im.__arrow_c_array__(), dst, width, height, False)
    assert not dst.any()


@pytest.mark.parametrize("shape", [(8, 6, 3), (4, 12, 3), (48, 3), (144,), (6, 8, 1, 3)])
def test_pack_rgb_refuses_an_output_of_the_right_size_but_wrong_shape(
    shape: tuple[int, ...],
) -> None:
    """Each dimension is checked, not only the byte count (8 * 6 * 3 in every case here)."""
    im = Image.fromarray(pattern(8, 6)).convert("RGBX")
    dst = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match="bytes in the output"):
        pk.pack_rgb(*im.__arrow_c_array__(), dst, 8, 6, False)
    assert not dst.any()


def test_backend_output_is_the_same_without_pack_rgb(
    images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ImageSpec.train(64, rotate_degrees=20)
    names = sorted(images)
    outs = [augment_image(images[k], spec, index=i) for i, k in enumerate(names)]
    monkeypatch.setattr(cpu_backend, "_pack_rgb", None)
    for i, k in enumerate(names):
        np.testing.assert_array_equal(augment_image(images[k], spec, index=i), outs[i], err_msg=k)


def test_store_never_exports_a_mapped_image() -> None:
    """Pillow's Arrow export of a frombuffer-mapped image dereferences NULL (Pillow 12):
    a read-only RGBX image goes the tobytes way instead."""
    rgb = pattern(9, 5, 2)
    rgbx = np.concatenate([rgb, np.full((5, 9, 1), 255, np.uint8)], axis=2).tobytes()
    mapped = Image.frombuffer("RGBX", (9, 5), rgbx, "raw", "RGBX", 0, 1)
    assert mapped.readonly
    dst = np.zeros((5, 9, 3), np.uint8)
    cpu_backend._store(mapped, dst, flip=True)
    np.testing.assert_array_equal(dst, rgb[:, ::-1])
