"""CPUTransform(processes=N): the CPU backend in worker processes gives exactly the
in-thread output, names broken samples, and leaves nothing behind in /dev/shm."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from image_samples import colour_image, jpeg

from datafuel.errors import ConfigError, DecodeError
from datafuel.loaders import BatchInfo, Loader, ShardSet, ShardWriter
from datafuel.vision import IMAGE_FIELDS as FIELDS
from datafuel.vision import CPUTransform, ImageSpec, loader_transform
from datafuel.vision._cpu import _shm_dir

SPEC = ImageSpec.train(48, rotate_degrees=15)


def leftovers() -> list[str]:
    d = _shm_dir() or "/tmp"
    return sorted(f for f in os.listdir(d) if f.startswith("datafuel-images-"))


@pytest.fixture(scope="module")
def in_processes() -> Iterator[CPUTransform]:
    t = CPUTransform(SPEC, processes=2)
    yield t
    t.close()


def test_processes_give_the_in_thread_output(
    images: dict[str, bytes], in_processes: CPUTransform
) -> None:
    before = leftovers()
    names = sorted(images)  # every kind: JPEG variants, CMYK, EXIF, PNG, GIF, BMP
    batch = {"jpeg": [images[k] for k in names], "label": np.arange(len(names))}
    for epoch in range(2):
        info = BatchInfo(indices=np.arange(len(names)) * 5, epoch=epoch, seed=4, batch_index=0)
        want = CPUTransform(SPEC)(batch, info)
        got = in_processes(batch, info)
        assert got["image"].shape == want["image"].shape and got["image"].dtype == np.uint8
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    one = in_processes({"jpeg": [images["baseline"]], "label": [0]}, BatchInfo([3], 0, 0, 0))
    assert one["image"].shape == (1, 48, 48, 3)
    assert leftovers() == before


def test_a_broken_image_in_a_worker_process_names_its_sample(
    bad_images: dict[str, bytes], in_processes: CPUTransform
) -> None:
    before = leftovers()
    good = jpeg(100, 80)
    for name, data in bad_images.items():
        batch = {"jpeg": [good, good, data, good], "label": np.zeros(4, np.int64)}
        info = BatchInfo(indices=np.array([5, 6, 77, 9]), epoch=0, seed=0, batch_index=0)
        with pytest.raises(DecodeError, match="sample 77") as exc:
            in_processes(batch, info)
        assert exc.value.row == 77 and exc.value.indices == [77] and exc.value.field == "jpeg", name
    assert leftovers() == before
    # the pool survives a failed batch
    ok = in_processes({"jpeg": [good], "label": [1]}, BatchInfo([0], 0, 0, 0))
    assert ok["image"].shape == (1, 48, 48, 3)


def test_a_loader_with_worker_threads_and_processes_matches_the_plain_loader(
    tmp_path: Path,
) -> None:
    d = tmp_path / "imgs"
    with ShardWriter(d, FIELDS) as w:
        for i in range(40):
            w.write({"image": [colour_image(i % 3, i)], "label": np.array([i % 3])})
    ds = ShardSet(d)
    t = loader_transform(ds, "cpu", size=32, processes=2)
    try:
        with Loader(ds, 8, seed=1, num_workers=2, transform=t) as loader:
            got = [(b["image"].clone(), b["label"].clone()) for b in loader]
    finally:
        t.close()
    plain = Loader(ds, 8, seed=1, num_workers=0, transform=loader_transform(ds, "cpu", size=32))
    for (img, lab), b in zip(got, plain, strict=True):
        assert torch.equal(img, b["image"]) and torch.equal(lab, b["label"])


def test_bad_process_settings_are_refused() -> None:
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigError, match="processes"):
            CPUTransform(SPEC, processes=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threads or processes"):
        CPUTransform(SPEC, threads=2, processes=2)
    assert "processes=3" in repr(CPUTransform(SPEC, processes=3))  # no pool until first use
