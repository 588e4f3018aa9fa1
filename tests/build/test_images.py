from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from image_samples import broken, encode, exif_jpeg, jpeg, make_folder, pattern
from PIL import Image

from datafuel import build
from datafuel.errors import ConfigError, DecodeError, InputDataError
from datafuel.loaders import ShardSet
from datafuel.vision import image_info


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_writes_splits_labels_and_class_names(folder: Path, tmp_path: Path) -> None:
    (folder / "dog" / "sub").mkdir()
    (folder / "dog" / "sub" / "nested.png").write_bytes(
        encode(Image.fromarray(pattern(30, 20)), "PNG")
    )
    (folder / "cat" / ".DS_Store").write_bytes(b"\0\0junk")  # hidden: ignored
    out = tmp_path / "out"
    s = build.images(folder, out, fractions=(0.6, 0.2, 0.2), seed=1, shard_bytes=5_000)
    assert s["classes"] == ["cat", "dog", "eel"] and s["total"] == 19 and s["skipped"] == 0
    assert sum(s["counts"].values()) == 19
    originals = {
        p.read_bytes(): p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
    }
    seen = []
    for name in ("train", "val", "test"):
        ds = ShardSet(out / name, verify=True)
        assert len(ds) == s["counts"][name]
        assert ds.metadata["class_names"] == ["cat", "dog", "eel"]
        assert sum(ds.metadata["class_counts"]) == len(ds)
        rows = ds.gather(np.arange(len(ds)))
        for data, label in zip(rows["image"], rows["label"].tolist(), strict=True):
            src = originals[data]  # original bytes kept unchanged
            assert src.relative_to(folder).parts[0] == s["classes"][label]
            seen.append(src)
    assert len(set(seen)) == 19
    assert ShardSet(out / "train").num_shards > 1
    split = json.loads((out / "split.json").read_text())
    assert split["seed"] == 1 and split["counts"] == s["counts"]
    assert sorted(f for part in split["files"].values() for f in part) == sorted(
        p.relative_to(folder).as_posix() for p in set(seen)
    )
    assert json.loads((out / "skipped.json").read_text()) == {"count": 0, "files": []}


def test_rerun_gives_identical_bytes(folder: Path, tmp_path: Path) -> None:
    for _ in range(2):
        build.images(folder, tmp_path / "a", seed=3)
    build.images(folder, tmp_path / "b", seed=3)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    build.images(folder, tmp_path / "c", seed=4)
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")


@pytest.mark.parametrize("bad", sorted(broken()))
def test_fail_names_the_bad_file(folder: Path, tmp_path: Path, bad: str) -> None:
    (folder / "dog" / bad).write_bytes(broken()[bad])
    with pytest.raises(DecodeError, match=f"dog/{bad}") as exc:
        build.images(folder, tmp_path / "out")
    assert exc.value.path is not None and exc.value.path.endswith(bad)
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()


def test_skip_lists_every_bad_file_and_builds_the_rest(folder: Path, tmp_path: Path) -> None:
    for name, data in broken().items():
        (folder / "eel" / name).write_bytes(data)
    (folder / "cat" / "notes.txt").write_text("a text file among the images")
    s = build.images(folder, tmp_path / "out", on_error="skip")
    assert s["skipped"] == 5 and s["total"] == 18
    report = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert report["count"] == 5
    assert sorted(f["path"] for f in report["files"]) == sorted(
        ["cat/notes.txt"] + [f"eel/{n}" for n in broken()]
    )
    assert all(f["reason"] for f in report["files"])
    assert sum(len(ShardSet(tmp_path / "out" / k)) for k in s["counts"]) == 18


def test_max_side_reencodes_large_images_upright(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "big.jpg").write_bytes(jpeg(800, 600, 1))
    (src / "a" / "rot.jpg").write_bytes(exif_jpeg(640, 480, 6, 2))
    (src / "a" / "small.jpg").write_bytes(small := jpeg(100, 80, 3))
    s = build.images(src, tmp_path / "out", fractions=(1.0, 0.0, 0.0), max_side=200)
    assert s["counts"] == {"train": 3}
    assert not (tmp_path / "out" / "val").exists()
    rows = ShardSet(tmp_path / "out" / "train").gather([0, 1, 2])["image"]
    sizes = {(i["width"], i["height"]) for i in map(image_info, rows)}
    assert sizes == {(200, 150), (150, 200), (100, 80)}
    assert small in rows  # small enough: original bytes kept


def test_bad_arguments(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="on_error"):
        build.images(folder, tmp_path / "o", on_error="ignore")
    with pytest.raises(ConfigError, match="max_side"):
        build.images(folder, tmp_path / "o", max_side=0)
    with pytest.raises(ConfigError, match="sum to 1"):
        build.images(folder, tmp_path / "o", fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ConfigError, match="inside the input folder"):
        build.images(folder, folder / "shards")
    with pytest.raises(InputDataError, match="not a directory"):
        build.images(tmp_path / "missing", tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputDataError, match="no class sub-folders"):
        build.images(empty, tmp_path / "o")
    (empty / "a").mkdir()
    (empty / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(InputDataError, match="no readable images"):
        build.images(empty, tmp_path / "o", on_error="skip")


def test_stratified_split_keeps_class_proportions(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", per_class=10)
    s = build.images(src, tmp_path / "out", fractions=(0.6, 0.2, 0.2), seed=2, stratify=True)
    assert s["counts"] == {"train": 18, "val": 6, "test": 6}
    for name in ("train", "val", "test"):
        counts = ShardSet(tmp_path / "out" / name).metadata["class_counts"]
        assert counts == [s["counts"][name] // 3] * 3
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["method"] == "stratified" and split["counts"] == s["counts"]


def _as_pre_rename_build(src: Path, dst: Path) -> None:
    """``src`` (a new image shard set) as a build from before the rename wrote it."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name == "manifest.json":
            text = p.read_text().replace('"image":', '"jpeg":').replace(".image.", ".jpeg.")
            (dst / p.name).write_text(text)
        else:
            (dst / p.name.replace(".image.", ".jpeg.")).write_bytes(p.read_bytes())


def test_image_field_is_image_and_sets_with_the_old_jpeg_field_still_load(
    folder: Path, tmp_path: Path
) -> None:
    from datafuel.loaders import Loader
    from datafuel.vision import loader_transform

    build.images(folder, tmp_path / "out", fractions=(1.0, 0.0, 0.0), shard_bytes=5_000)
    new = ShardSet(tmp_path / "out" / "train", verify=True)
    assert list(new.fields) == ["image", "label"]
    assert all(".jpeg." not in p.name for p in new.directory.iterdir())
    _as_pre_rename_build(new.directory, tmp_path / "old")
    old = ShardSet(tmp_path / "old", verify=True)
    assert list(old.fields) == ["jpeg", "label"]

    def pixels(ds: ShardSet) -> list[np.ndarray]:
        t = loader_transform(ds, "cpu", size=16)  # default image_field: image, else jpeg
        return [b["image"] for b in Loader(ds, 4, seed=2, transform=t)]

    got_old, got_new = pixels(old), pixels(new)
    assert len(got_new) == len(got_old) > 1
    assert all(np.array_equal(a, b) for a, b in zip(got_old, got_new, strict=True))
