"""The DALI backend on the CPU (device_id=None): same shapes, dtypes and crops as the CPU backend."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from image_samples import jpeg

from datafuel.errors import ConfigError, DecodeError
from datafuel.loaders import BatchInfo
from datafuel.vision import (
    CPUTransform,
    DALITransform,
    ImageSpec,
    dali_unavailable_reason,
    loader_transform,
)

_REASON = dali_unavailable_reason()
pytestmark = [
    pytest.mark.dali,
    pytest.mark.skipif(_REASON is not None, reason=f"DALI backend not testable: {_REASON}"),
]

EVAL = ImageSpec.eval(96)
TRAIN = ImageSpec.train(64, rotate_degrees=25)


@pytest.fixture(scope="module")
def dali_eval() -> Iterator[DALITransform]:
    # building a pipeline costs seconds: one per spec for the whole module
    t = loader_transform(None, "dali", spec=EVAL, batch_size=8, device="cpu")
    assert isinstance(t, DALITransform)
    yield t


@pytest.fixture(scope="module")
def dali_train() -> Iterator[DALITransform]:
    yield DALITransform(TRAIN, batch_size=16, device="cpu")


def batch_of(images: dict[str, bytes], epoch: int = 0) -> tuple[dict, BatchInfo]:
    names = sorted(images)
    batch = {"jpeg": [images[k] for k in names], "label": np.arange(len(names))}
    return batch, BatchInfo(indices=np.arange(len(names)) * 7, epoch=epoch, seed=3, batch_index=0)


def test_eval_pixels_match_the_cpu_backend(
    images: dict[str, bytes], dali_eval: DALITransform
) -> None:
    batch, info = batch_of(images)  # 14 images through a pipeline of batch 8: run in two pieces
    d = dali_eval(batch, info)
    c = CPUTransform(EVAL)(batch, info)
    assert dali_eval.output_spec == {"image": ("uint8", (96, 96, 3)), "label": ("int64", ())}
    assert d["image"].shape == c["image"].shape and d["image"].dtype == np.uint8
    np.testing.assert_array_equal(d["label"], c["label"])
    for i, name in enumerate(sorted(images)):
        diff = np.abs(d["image"][i].astype(int) - c["image"][i].astype(int))
        assert diff.mean() < 1.5, (name, diff.mean())  # grayscale, CMYK, EXIF, PNG, GIF alike


def test_train_crops_flips_and_angles_match_the_cpu_backend(
    images: dict[str, bytes], dali_train: DALITransform
) -> None:
    batch, info = batch_of(images, epoch=2)
    d = dali_train(batch, info)["image"]
    c = CPUTransform(TRAIN)(batch, info)["image"]
    assert d.shape == c.shape == (len(images), 64, 64, 3)
    for i, name in enumerate(sorted(images)):
        diff = np.abs(d[i].astype(int) - c[i].astype(int))
        assert diff.mean() < 3.0, (name, diff.mean())  # same box, flip and angle from the seed
    np.testing.assert_array_equal(d, dali_train(batch, info)["image"])  # seeded: exact repeat
    other = dali_train(*batch_of(images, epoch=3))["image"]
    assert not np.array_equal(d, other)


def test_a_broken_image_names_its_sample(
    bad_images: dict[str, bytes], dali_eval: DALITransform
) -> None:
    good = jpeg(100, 80)
    for name, data in bad_images.items():
        batch = {"jpeg": [good, data], "label": np.zeros(2, np.int64)}
        with pytest.raises(DecodeError, match="sample 41") as exc:
            dali_eval(batch, BatchInfo(indices=np.array([40, 41]), epoch=0, seed=0, batch_index=0))
        assert exc.value.row == 41, name
    # the pipeline still works after a failed batch
    ok = dali_eval(
        {"jpeg": [good], "label": np.zeros(1, np.int64)}, BatchInfo(np.array([0]), 0, 0, 0)
    )
    assert ok["image"].shape == (1, 96, 96, 3)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="device"):
        DALITransform(EVAL, device="gpu")
    with pytest.raises(ConfigError, match="batch_size"):
        DALITransform(EVAL, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            DALITransform(EVAL, device="mixed")
