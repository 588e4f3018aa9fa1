"""The vision transforms inside datafuel.loaders.Loader: a tiny CNN learns, resume is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from image_samples import colour_image

from datafuel.errors import DatafuelError
from datafuel.loaders import Loader, ShardSet, ShardWriter, fixed
from datafuel.vision import IMAGE_FIELDS as FIELDS
from datafuel.vision import (
    dali_available,
    dali_unavailable_reason,
    loader_transform,
    normalize_on_device,
)


def write_colour_shards(
    directory: Path, n: int, seed: int, broken_at: int | None = None
) -> ShardSet:
    labels = np.arange(n) % 3
    data = [colour_image(int(lab), seed * 1000 + i) for i, lab in enumerate(labels)]
    if broken_at is not None:
        data[broken_at] = data[broken_at][:200]  # truncated JPEG
    with ShardWriter(
        directory, FIELDS, shard_bytes=40_000, metadata={"class_names": ["r", "g", "b"]}
    ) as w:
        w.write({"image": data, "label": labels.astype(np.int64)})
    return ShardSet(directory)


class TinyCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 3),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(normalize_on_device(images))


def train_epochs(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loader: Loader,
    epochs: int,
    shape: tuple[int, ...],
) -> list[float]:
    """A plain training loop over ``loader``; mean loss per epoch. Checks every batch's images."""
    epoch_losses = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        losses = []
        for batch in loader:
            assert batch["image"].dtype == torch.uint8 and batch["image"].shape == shape
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
    return epoch_losses


def test_tiny_cnn_trains_through_the_loader(tmp_path: Path) -> None:
    train = write_colour_shards(tmp_path / "train", 90, seed=1)
    val = write_colour_shards(tmp_path / "val", 30, seed=2)
    assert train.num_shards > 1
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loader = Loader(
        train, 15, num_workers=2, seed=0, transform=loader_transform(train, "cpu", size=32)
    )
    epoch_losses = train_epochs(model, opt, loader, 4, (15, 32, 32, 3))
    assert epoch_losses[-1] < 0.6 * epoch_losses[0]
    stats = loader.stats()
    # every batch of the 4 epochs was counted (90 samples in batches of 15: 6 a epoch)
    assert (stats.batches, stats.samples) == (4 * 6, 4 * 90)
    assert stats.wall_s > 0 and stats.samples_per_s == pytest.approx(stats.samples / stats.wall_s)
    assert 0.0 <= stats.wait_s <= stats.wall_s
    assert 0.0 <= stats.starvation <= 1.0
    assert stats.starvation == pytest.approx(stats.wait_s / stats.wall_s)
    assert 0.0 <= stats.wait_p50_ms <= stats.wait_p95_ms <= stats.wait_max_ms
    assert stats.wait_max_ms <= 1e3 * stats.wait_s + 1e-9
    model.eval()
    correct = 0
    with (
        torch.no_grad(),
        Loader(
            val, 10, shuffle=False, transform=loader_transform(val, "cpu", train=False, size=32)
        ) as vl,
    ):
        for batch in vl:
            correct += int((model(batch["image"]).argmax(1) == batch["label"]).sum())
    assert correct / len(val) >= 0.8


def test_resumed_loader_repeats_the_same_augmented_pixels(tmp_path: Path) -> None:
    ds = write_colour_shards(tmp_path / "s", 40, seed=3)

    def make() -> Loader:
        return Loader(ds, 8, seed=5, num_workers=2, transform=loader_transform(ds, "cpu", size=24))

    full = [b["image"].clone() for b in make()]
    first = make()
    it = iter(first)
    head = [next(it)["image"].clone() for _ in range(2)]
    state = first.state_dict()
    first.close()
    resumed = make()
    resumed.load_state_dict(state)
    tail = [b["image"].clone() for b in resumed]
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full, strict=True):
        assert torch.equal(a, b)


def test_a_corrupt_image_names_its_sample_in_the_training_loop(tmp_path: Path) -> None:
    ds = write_colour_shards(tmp_path / "bad", 12, seed=4, broken_at=7)
    loader = Loader(ds, 4, shuffle=False, transform=loader_transform(ds, "cpu", size=16))
    with pytest.raises(DatafuelError, match="sample 7") as exc:
        for _ in loader:
            pass
    assert 7 in (exc.value.indices or [])


def test_loader_transform_checks_the_shard_set(tmp_path: Path) -> None:
    other = tmp_path / "x"
    with ShardWriter(other, {"x": FIELDS["label"]}) as w:
        w.write({"x": np.arange(3)})
    with pytest.raises(DatafuelError, match="bytes field 'image'"):
        loader_transform(ShardSet(other), "cpu")
    floats = tmp_path / "f"
    with ShardWriter(floats, {"jpeg": FIELDS["image"], "label": fixed("float32")}) as w:
        w.write({"jpeg": [colour_image(0, 0)], "label": np.zeros(1, np.float32)})
    with pytest.raises(DatafuelError, match="integer scalar field 'label'"):
        loader_transform(ShardSet(floats), "cpu")
    assert loader_transform(ShardSet(floats), "cpu", label_field=None).output_spec.keys() == {
        "image"
    }


@pytest.mark.dali
@pytest.mark.skipif(
    not dali_available(), reason=f"DALI backend not testable: {dali_unavailable_reason()}"
)
def test_dali_transform_feeds_the_loader(tmp_path: Path) -> None:
    ds = write_colour_shards(tmp_path / "d", 16, seed=5)
    t = loader_transform(ds, "dali", size=24, batch_size=8)
    with Loader(ds, 8, seed=1, num_workers=2, transform=t) as loader:
        batches = list(loader)
    assert [tuple(b["image"].shape) for b in batches] == [(8, 24, 24, 3)] * 2
    cpu = loader_transform(ds, "cpu", size=24)
    with Loader(ds, 8, seed=1, num_workers=0, transform=cpu) as loader:
        for a, b in zip(batches, loader, strict=True):
            assert torch.equal(a["label"], b["label"])
            assert (a["image"].float() - b["image"].float()).abs().mean() < 3.0


@pytest.mark.dali
@pytest.mark.skipif(
    not dali_available() or not torch.cuda.is_available(),
    reason="needs NVIDIA DALI and a CUDA device (nvJPEG decode, device='mixed')",
)
def test_dali_on_the_gpu_feeds_a_cuda_training_loop(tmp_path: Path) -> None:
    ds = write_colour_shards(tmp_path / "g", 48, seed=6)
    t = loader_transform(ds, "dali", size=32, batch_size=16)
    assert t.device == "mixed"  # type: ignore[attr-defined]  # the default where CUDA is present
    cpu = loader_transform(ds, "cpu", size=32)
    with Loader(ds, 16, seed=2, num_workers=2, device="cuda", transform=t) as loader:
        gpu = list(loader)
    with Loader(ds, 16, seed=2, num_workers=0, transform=cpu) as loader:
        host = list(loader)
    for a, b in zip(gpu, host, strict=True):
        assert a["image"].is_cuda and a["image"].dtype == torch.uint8
        assert a["image"].shape == (16, 32, 32, 3)
        assert torch.equal(a["label"].cpu(), b["label"])
        # nvJPEG and libjpeg-turbo differ a little (IDCT, chroma upsampling); same crops
        assert (a["image"].cpu().float() - b["image"].float()).abs().mean() < 4.0
    train = write_colour_shards(tmp_path / "train", 90, seed=1)
    torch.manual_seed(0)
    model = TinyCNN().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    loader = Loader(
        train,
        15,
        num_workers=2,
        seed=0,
        device="cuda",
        transform=loader_transform(train, "dali", size=32, batch_size=15),
    )
    epoch_losses = train_epochs(model, opt, loader, 4, (15, 32, 32, 3))
    assert epoch_losses[-1] < 0.6 * epoch_losses[0]
    assert loader.stats().batches == 4 * 6
