"""Photos from a bucket: the vision transform over a remote image set gives the local batches.

The two JPEG photographs scikit-learn ships (``china.jpg``, ``flower.jpg``, 640 x 427),
each re-encoded at a few sizes so that the set spans several shards.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from datafuel.loaders import Loader, ShardWriter
from datafuel.vision import IMAGE_FIELDS, loader_transform

PIL = pytest.importorskip("PIL.Image")


def _photos() -> list[bytes]:
    import sklearn.datasets

    root = Path(sklearn.datasets.__file__).parent / "images"
    out = []
    for name in ("china.jpg", "flower.jpg"):
        img = PIL.open(root / name).convert("RGB")
        for side in (320, 256, 200, 160, 128, 96):
            buf = io.BytesIO()
            img.resize((side, side * 2 // 3)).save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
    return out


def test_remote_photos_decode_to_the_local_batches(s3, tmp_path):
    data = _photos()
    labels = np.array([i // 6 for i in range(len(data))], dtype=np.int64)
    local = tmp_path / "img"
    with ShardWriter(
        local, IMAGE_FIELDS, shard_bytes=30_000, metadata={"class_names": ["china", "flower"]}
    ) as w:
        w.write({"image": data, "label": labels})
    s3.upload_dir(local, "img/train")
    url = s3.url("img/train")

    def batches(source: str | Path, **kw: object) -> list[dict[str, np.ndarray]]:
        loader = Loader(
            source,
            batch_size=4,
            seed=3,
            shuffle="shards",
            shuffle_window=2,
            transform=loader_transform(None, "cpu", size=48),
            **kw,
        )
        return [{k: v.numpy() for k, v in b.items()} for b in loader]

    remote = batches(url, cache_dir=tmp_path / "c", cache_limit=3 * 30_000 + 20_000)
    here = batches(local)
    assert len(remote) == len(here) == 3
    for a, b in zip(remote, here, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert remote[0]["image"].shape == (4, 48, 48, 3) and remote[0]["image"].dtype == np.uint8
    assert sorted(np.concatenate([b["label"] for b in remote]).tolist()) == sorted(labels.tolist())
