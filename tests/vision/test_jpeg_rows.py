"""Pillow path: decoding only the rows a crop needs (SOF height) gives the same pixels as a
full decode. (The region decoder, used when its extension is built, is tested in
test_jpeg_region.py; these tests switch it off.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from image_samples import exif_jpeg, jpeg, pattern
from PIL import Image

import datafuel.vision._cpu as cpu_backend
from datafuel.vision import ImageSpec, augment_image, sample_params
from datafuel.vision._jpeg import jpeg_header, sof_height_offset, truncate_rows


def full_decode_reference(data: bytes, spec: ImageSpec, index: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        p = sample_params(spec, *im.size, 0, 0, index)
        out = np.asarray(
            im.convert("RGB").resize((spec.size,) * 2, Image.Resampling.BILINEAR, box=p.box)
        )
    return out[:, ::-1] if p.flip else out


@pytest.mark.parametrize(("w", "h"), [(500, 375), (375, 500), (333, 221)])
def test_row_limited_decode_is_pixel_identical(
    w: int, h: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def counting(data: bytes, offset: int, rows: int) -> bytes:
        calls.append(rows)
        return truncate_rows(data, offset, rows)

    monkeypatch.setattr(cpu_backend, "truncate_rows", counting)
    monkeypatch.setattr(cpu_backend, "_decode_region", None)
    data = jpeg(w, h, seed=w)
    for spec in (ImageSpec.train(224), ImageSpec.train(96, scale=(0.05, 0.3)), ImageSpec.eval(224)):
        for index in range(12):
            if spec.size == 96 and index > 5:
                break
            got = augment_image(data, spec, index=index)
            if spec.size == 96:
                # small crops of a big image: draft may scale; compare loosely
                assert np.abs(got.astype(int) - full_decode_reference(data, spec, index)).mean() < 3
            else:
                np.testing.assert_array_equal(got, full_decode_reference(data, spec, index))
    assert len(calls) >= 12 and all(r < h for r in calls)  # the short decode really ran, often


def test_header_reader_and_truncation() -> None:
    data = jpeg(320, 200)
    w, h, offset, app1 = jpeg_header(data)  # type: ignore[misc]
    assert (w, h, app1) == (320, 200, False) and offset is not None
    short = truncate_rows(data, offset, 64)
    with Image.open(io.BytesIO(short)) as im:
        assert im.size == (320, 64)
        im.load()
        top = np.asarray(im)
    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(top[:56], np.asarray(im)[:56])
    assert jpeg_header(exif_jpeg(320, 200, 6))[3] is True  # type: ignore[index]
    prog = jpeg(320, 200, progressive=True)
    assert jpeg_header(prog)[:3] == (320, 200, None)  # type: ignore[index]
    assert sof_height_offset(prog, 200) is None and sof_height_offset(data, 199) is None
    for not_jpeg in (
        b"",
        b"\xff\xd8",
        b"\x89PNG\r\n",
        b"\xff\xd8\xff\xda\x00\x02",
        b"\xff\xd8\x00\x00",
    ):
        assert jpeg_header(not_jpeg) is None
    buf = io.BytesIO()
    Image.fromarray(pattern(40, 30)).save(buf, "PNG")
    assert jpeg_header(buf.getvalue()) is None
