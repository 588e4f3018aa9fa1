from __future__ import annotations

import io

import numpy as np
import pytest
from image_samples import encode, pattern
from PIL import Image, ImageOps

from datafuel.errors import DecodeError, InputDataError
from datafuel.vision import decode_image, image_info


def test_every_kind_decodes_to_rgb_uint8(images: dict[str, bytes]) -> None:
    for name, data in images.items():
        arr = decode_image(data, what=name)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
        info = image_info(data)
        assert (info["width"], info["height"]) == (arr.shape[1], arr.shape[0]), name
    assert image_info(images["exif6"])["width"] == 240  # stored 320x240, orientation 6
    assert image_info(images["cmyk"])["mode"] == "CMYK"
    assert image_info(images["progressive"])["format"] == "JPEG"


@pytest.mark.parametrize("orient", range(1, 9))
def test_exif_orientation_is_applied(orient: int) -> None:
    src = Image.fromarray(pattern(60, 40, orient))
    ex = Image.Exif()
    ex[0x0112] = orient
    data = encode(src, "PNG", exif=ex.tobytes())  # lossless, so pixels compare exactly
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    got = decode_image(data)
    np.testing.assert_array_equal(got, expected)
    assert got.shape[:2] == ((60, 40) if orient >= 5 else (40, 60))


def test_colour_conversions(images: dict[str, bytes]) -> None:
    gray = decode_image(images["gray"])
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    ref = pattern(200, 150, 3).astype(int)
    cmyk = decode_image(images["cmyk"]).astype(int)
    assert np.abs(cmyk - ref).mean() < 6  # CMYK JPEG back to RGB: only JPEG loss remains
    rgba = decode_image(images["rgba_png"])
    np.testing.assert_array_equal(rgba, ref)  # alpha dropped, colour kept (lossless PNG)
    pal = decode_image(images["palette_png"])
    with Image.open(io.BytesIO(images["palette_png"])) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(pal, np.asarray(im.convert("RGB")))
    png16 = decode_image(images["png16"])
    np.testing.assert_array_equal(png16[..., 0], pattern(200, 150, 9)[..., 0])


def test_broken_files_raise_decode_error_naming_them(bad_images: dict[str, bytes]) -> None:
    for name, data in bad_images.items():
        with pytest.raises(DecodeError, match=name) as info:
            image_info(data, what=name)
        assert isinstance(info.value, InputDataError) and isinstance(info.value, ValueError)
        assert info.value.__cause__ is not None or not data  # raised from Pillow's error
        with pytest.raises(DecodeError, match=name):
            decode_image(data, what=name)
    with pytest.raises(DecodeError, match="zero bytes"):
        decode_image(b"")
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(bad_images["truncated.jpg"])
