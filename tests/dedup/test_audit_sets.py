"""build.audit on image and table shard sets written directly (not by a build): copies across
the sets are found with their indices; distinct records, and copies inside one set, are not."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datafuel import build
from datafuel.cli import main
from datafuel.loaders import bytes_field, fixed, write_shards

sk_datasets = pytest.importorskip("sklearn.datasets")
PHOTOS = sorted((Path(sk_datasets.__file__).parent / "images").glob("*.jpg"))  # china, flower


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _photos() -> list[Image.Image]:
    """Ten pictures of different content: the two photographs and their quarters."""
    out = []
    for p in PHOTOS:
        img = Image.open(p).convert("RGB")
        out.append(img)
        w, h = img.size
        for x, y in [(0, 0), (1, 0), (0, 1), (1, 1)]:
            out.append(img.crop((x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2)))
    return out


def _pairs(result: dict) -> set[tuple[str, int, str, int]]:
    got = set()
    for p in result["pairs"]:
        a, b = sorted([p["a"], p["b"]], key=lambda s: (s["set"], s["index"]))
        got.add((Path(a["set"]).name, a["index"], Path(b["set"]).name, b["index"]))
    return got


def test_image_sets_copies_across_sets_are_found_with_indices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pics = _photos()
    w, h = pics[3].size
    a = [_jpeg(pics[k]) for k in range(5)] + [_jpeg(pics[0], 70)]  # a[5]: a copy inside A
    b = [
        _jpeg(pics[1], 65),  # a re-encode of a[1]
        _jpeg(pics[7]),
        _jpeg(pics[3].resize((w // 2, h // 2), Image.Resampling.BICUBIC)),  # a[3] at half size
        _jpeg(pics[8]),
        _jpeg(pics[9]),
    ]
    fields = {"image": bytes_field(), "label": fixed("int64")}
    for name, data in (("A", a), ("B", b)):
        write_shards(tmp_path / name, fields=fields, image=data, label=np.zeros(len(data), int))
    got = build.audit([tmp_path / "A", tmp_path / "B"])
    assert got["kind"] == "images" and got["leaked"]
    assert _pairs(got) == {("A", 1, "B", 0), ("A", 3, "B", 2)}
    assert got["cross_clusters"] == 2 and got["sets"] == {
        str(tmp_path / "A"): 6,
        str(tmp_path / "B"): 5,
    }
    exact = build.audit([tmp_path / "A", tmp_path / "B"], method="exact")
    assert not exact["leaked"] and exact["pairs"] == []  # re-encodes differ in their pixels
    # the same pictures without the copies: nothing across the sets
    write_shards(tmp_path / "C", fields=fields, image=[b[1], b[3], b[4]], label=np.zeros(3, int))
    assert not build.audit([tmp_path / "A", tmp_path / "C"])["leaked"]
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "A"), str(tmp_path / "B"), "--json"]) == 1
    assert _pairs(json.loads(capsys.readouterr().out)) == _pairs(got)
    assert main(["audit", str(tmp_path / "A"), str(tmp_path / "C")]) == 0


def test_table_sets_equal_rows_across_sets_are_found_and_one_changed_feature_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    xa = rng.normal(size=(30, 4)).astype(np.float32)
    xa[29] = xa[0]  # a copy inside A: not a leak
    xb = rng.normal(size=(12, 4)).astype(np.float32)
    xb[3], xb[8] = xa[7], xa[21]  # copies across the sets
    xb[5] = xa[11]
    xb[5, 2] += 0.5  # differs from a[11] in one feature
    for name, x in (("A", xa), ("B", xb)):
        write_shards(tmp_path / name, x=x, y=np.arange(len(x)))
    got = build.audit([tmp_path / "A", tmp_path / "B"])
    assert got["kind"] == "table" and got["method"] == "exact" and got["leaked"]
    assert _pairs(got) == {("A", 7, "B", 3), ("A", 21, "B", 8)}
    assert all(p["similarity"] == 1.0 for p in got["pairs"])
    assert got["cross_clusters"] == 2 and got["cross_records"] == 4
    xb[3, 0] += 1.0
    xb[8, 3] -= 1.0
    write_shards(tmp_path / "B2", x=xb, y=np.arange(len(xb)))
    clean = build.audit([tmp_path / "A", tmp_path / "B2"])
    assert not clean["leaked"] and clean["cross_pairs"] == 0
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "A"), str(tmp_path / "B")]) == 1
    out = capsys.readouterr().out
    assert "2 cluster(s) across sets, 2 pair(s)" in out and f"{tmp_path / 'B'}[3]" in out
