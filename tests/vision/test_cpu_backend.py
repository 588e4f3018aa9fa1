from __future__ import annotations

import numpy as np
import pytest
from image_samples import encode, jpeg, pattern
from PIL import Image

from datafuel.errors import ConfigError, DecodeError, SchemaError
from datafuel.loaders import BatchInfo
from datafuel.vision import (
    CPUTransform,
    HorizontalFlip,
    ImageSpec,
    RandomResizedCrop,
    augment_image,
    decode_image,
    loader_transform,
    sample_params,
)
from datafuel.vision._params import center_crop_box, draft_scale


def batch_of(images: dict[str, bytes]) -> tuple[dict, BatchInfo]:
    names = sorted(images)
    batch = {"jpeg": [images[k] for k in names], "label": np.arange(len(names)) * 3}
    return batch, BatchInfo(
        indices=np.arange(100, 100 + len(names)), epoch=0, seed=0, batch_index=0
    )


@pytest.mark.parametrize("train", [True, False])
def test_every_kind_gives_the_declared_output(images: dict[str, bytes], train: bool) -> None:
    t = loader_transform(None, "cpu", train=train, size=96)
    batch, info = batch_of(images)
    out = t(batch, info)
    assert t.output_spec == {"image": ("uint8", (96, 96, 3)), "label": ("int64", ())}
    assert out["image"].shape == (len(images), 96, 96, 3) and out["image"].dtype == np.uint8
    assert out["label"].dtype == np.int64 and out["label"].tolist() == batch["label"].tolist()
    assert out["image"].std() > 10  # real content, not a blank buffer


def reference_eval(data: bytes, size: int, shorter: int) -> np.ndarray:
    """torchvision's eval transform done the plain way: full decode, Resize(shorter), CenterCrop."""
    img = Image.fromarray(decode_image(data))
    w, h = img.size
    rw, rh = (shorter, int(shorter * h / w)) if w <= h else (int(shorter * w / h), shorter)
    img = img.resize((rw, rh), Image.Resampling.BILINEAR)
    top, left = round((rh - size) / 2), round((rw - size) / 2)
    return np.asarray(img.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("name", ["baseline", "tall", "large", "exif6", "gray", "cmyk", "rgba_png"])
def test_eval_matches_plain_resize_then_center_crop(images: dict[str, bytes], name: str) -> None:
    spec = ImageSpec.eval(112, draft=False)
    got = augment_image(images[name], spec).astype(int)
    ref = reference_eval(images[name], 112, 128).astype(int)
    assert np.abs(got - ref).mean() < 1.5, name


def test_dct_draft_path_matches_full_decode_within_tolerance() -> None:
    data = jpeg(1600, 1200, seed=3)
    for spec_d, spec_f in [
        (ImageSpec.eval(128), ImageSpec.eval(128, draft=False)),
        (
            ImageSpec.train(128, scale=(0.5, 1.0)),
            ImageSpec.train(128, scale=(0.5, 1.0), draft=False),
        ),
    ]:
        for index in range(4):
            a = augment_image(data, spec_d, index=index).astype(int)
            b = augment_image(data, spec_f, index=index).astype(int)
            assert not np.array_equal(
                a, b
            )  # the draft path really ran (DCT scaling differs a little)
            assert np.abs(a - b).mean() < 3.0
            assert np.percentile(np.abs(a - b), 99) < 20
    assert draft_scale(center_crop_box(1600, 1200, 146, 128), 128) == 8


def test_draft_maps_the_box_of_exif_rotated_jpegs() -> None:
    ex = Image.Exif()
    ex[0x0112] = 8
    data = jpeg(1600, 1000, seed=4, exif=ex.tobytes())
    a = augment_image(data, ImageSpec.eval(96)).astype(int)
    b = augment_image(data, ImageSpec.eval(96, draft=False)).astype(int)
    assert np.abs(a - b).mean() < 3.0
    ref = reference_eval(data, 96, 110).astype(int)
    assert np.abs(a - ref).mean() < 3.0


def test_seeded_augmentation_is_exact_on_resume(images: dict[str, bytes]) -> None:
    t = CPUTransform(ImageSpec.train(64, rotate_degrees=10))
    batch, info = batch_of(images)
    a = t(batch, info)["image"]
    np.testing.assert_array_equal(a, t(batch, info)["image"])
    # a resumed run sees the same samples in other batches, in another order: same pixels per sample
    order = np.arange(len(batch["jpeg"]))[::-1]
    sub = {"jpeg": [batch["jpeg"][i] for i in order], "label": batch["label"][order]}
    b = t(sub, BatchInfo(indices=info.indices[order], epoch=0, seed=0, batch_index=5))["image"]
    np.testing.assert_array_equal(b, a[order])
    c = t(batch, BatchInfo(indices=info.indices, epoch=1, seed=0, batch_index=0))["image"]
    d = t(batch, BatchInfo(indices=info.indices, epoch=0, seed=1, batch_index=0))["image"]
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    e = CPUTransform(ImageSpec.train(64, rotate_degrees=10), seed=1)(batch, info)["image"]
    assert not np.array_equal(a, e)


def test_thread_pool_gives_identical_output(images: dict[str, bytes]) -> None:
    batch, info = batch_of(images)
    one = CPUTransform(ImageSpec.train(80))(batch, info)["image"]
    pooled = CPUTransform(ImageSpec.train(80), threads=3)
    try:
        np.testing.assert_array_equal(pooled(batch, info)["image"], one)
    finally:
        pooled.close()
    with pytest.raises(ConfigError, match="threads"):
        CPUTransform(ImageSpec.train(80), threads=0)


def test_flip_mirrors_the_same_crop() -> None:
    data = jpeg(300, 200, seed=5)
    plain = augment_image(data, ImageSpec([RandomResizedCrop(64)]), index=9)
    flipped = augment_image(data, ImageSpec([RandomResizedCrop(64), HorizontalFlip(1.0)]), index=9)
    np.testing.assert_array_equal(flipped, plain[:, ::-1])


def test_rotation_keeps_size_and_blackens_corners() -> None:
    data = encode(Image.new("RGB", (200, 200), (200, 180, 160)), "PNG")
    spec = ImageSpec.train(64, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, rotate_degrees=60)
    outs = [augment_image(data, spec, index=i) for i in range(20)]
    angles = [sample_params(spec, 200, 200, 0, 0, i).angle for i in range(20)]
    assert all(o.shape == (64, 64, 3) for o in outs)
    # an angle of 10 degrees or more turns every corner of the square output black
    big = [o for o, angle in zip(outs, angles, strict=True) if abs(angle) >= 10]
    assert len(big) >= 10
    for o in big:
        corners = o[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners.sum(axis=1) < 100).all(), corners
    assert all((o[32, 32] == (200, 180, 160)).all() for o in outs)


def test_normalize_in_spec_gives_float32(images: dict[str, bytes]) -> None:
    batch, info = batch_of(images)
    u8 = CPUTransform(ImageSpec.eval(48))(batch, info)["image"]
    t = CPUTransform(ImageSpec.eval(48, normalize=True))
    assert t.output_spec["image"] == ("float32", (48, 48, 3))
    f = t(batch, info)["image"]
    assert f.dtype == np.float32
    norm = t.spec.normalize
    assert norm is not None
    np.testing.assert_allclose(
        f, (u8 - np.array(norm.mean)) / np.array(norm.std), rtol=1e-5, atol=1e-5
    )


def test_a_broken_image_names_its_sample(bad_images: dict[str, bytes]) -> None:
    t = CPUTransform(ImageSpec.train(32))
    good = jpeg(100, 80)
    for name, data in bad_images.items():
        batch = {"jpeg": [good, data, good], "label": np.zeros(3, np.int64)}
        info = BatchInfo(indices=np.array([5, 77, 9]), epoch=0, seed=0, batch_index=0)
        with pytest.raises(DecodeError, match="sample 77") as exc:
            t(batch, info)
        assert exc.value.row == 77 and exc.value.indices == [77] and exc.value.field == "jpeg", name


def test_schema_problems_are_reported() -> None:
    t = CPUTransform(ImageSpec.train(32), image_field="jpeg")
    info = BatchInfo(indices=np.array([0]), epoch=0, seed=0, batch_index=0)
    with pytest.raises(SchemaError, match="'jpeg'"):
        t({"image": [b""], "label": np.zeros(1)}, info)
    with pytest.raises(SchemaError, match="'label'"):
        t({"jpeg": [jpeg(40, 40)]}, info)
    unlabeled = CPUTransform(ImageSpec.train(32), label_field=None)
    assert set(unlabeled({"jpeg": [jpeg(40, 40)]}, info)) == {"image"}
    with pytest.raises(SchemaError, match="indices"):
        t({"jpeg": [jpeg(40, 40)] * 2, "label": np.zeros(2)}, info)
    with pytest.raises(ConfigError, match="backend"):
        loader_transform(None, "gpu")
    with pytest.raises(ConfigError, match="ImageSpec"):
        CPUTransform("train")  # type: ignore[arg-type]


def test_pattern_is_asymmetric_so_flips_and_rotations_are_visible() -> None:
    p = pattern(64, 48)
    assert not np.array_equal(p, p[:, ::-1]) and not np.array_equal(p, p[::-1])
