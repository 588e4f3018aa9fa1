"""`datafuel build images` end to end, on JPEGs written in the test."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datafuel.cli import main
from datafuel.loaders import ShardSet


def write_jpeg(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    path.write_bytes(buf.getvalue())


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for c, name in enumerate(("apple", "banana")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            write_jpeg(root / name / f"{i}.jpg", 40 + i, 30 + c, 10 * c + i)
    return root


def test_build_images_json_summary_and_outputs(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shards"
    assert (
        main(
            [
                "build",
                "images",
                str(src),
                "--out",
                str(out),
                "--split",
                "0.7,0.2,0.1",
                "--seed",
                "5",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"train": 14, "val": 4, "test": 2}
    assert summary["classes"] == ["apple", "banana"] and summary["skipped"] == 0
    for name, n in summary["counts"].items():
        ds = ShardSet(out / name, verify=True)
        assert len(ds) == n and ds.metadata["class_names"] == ["apple", "banana"]
    assert json.loads((out / "split.json").read_text())["seed"] == 5


def test_bad_file_fails_with_one_line_then_skip_builds(src: Path, tmp_path: Path) -> None:
    (src / "banana" / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "datafuel", "build", "images", str(src), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("datafuel: error: ") and "banana/broken.jpg" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([*cmd, "--on-error", "skip"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1" in proc.stdout and "skipped.json" in proc.stdout
    report = json.loads((out / "skipped.json").read_text())
    assert [f["path"] for f in report["files"]] == ["banana/broken.jpg"]


def test_max_side_and_bad_options(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jpeg(src / "apple" / "huge.jpg", 900, 400, 99)
    out = tmp_path / "s"
    args = ["build", "images", str(src), "--out", str(out), "--max-side", "64", "--split", "1,0,0"]
    assert main(args) == 0
    ds = ShardSet(out / "train")
    sides = [max(Image.open(io.BytesIO(b)).size) for b in ds.gather(np.arange(len(ds)))["image"]]
    assert max(sides) == 64
    assert main(["build", "images", str(src), "--out", str(out), "--split", "0.5,0.5"]) == 1
    assert "three numbers" in capsys.readouterr().err
    assert main(["build", "images", str(src), "--out", str(out), "--on-error", "maybe"]) == 2


def test_build_images_into_a_table_build_is_one_line_error_and_overwrite_replaces_it(
    src: Path, tmp_path: Path
) -> None:
    from importlib.resources import files

    out = tmp_path / "mixed"
    houses = str(files("datafuel") / "data" / "houses.csv")
    table = [
        sys.executable,
        "-m",
        "datafuel",
        "build",
        "table",
        houses,
        "--target",
        "price",
        "--drop",
        "id",
    ]
    assert (
        subprocess.run([*table, "--out", str(out)], capture_output=True, timeout=120).returncode
        == 0
    )
    cmd = [sys.executable, "-m", "datafuel", "build", "images", str(src), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("datafuel: error: ") and "a table build" in proc.stderr
    assert "recipe.json" in proc.stderr and "--overwrite" in proc.stderr
    proc = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (out / "recipe.json").exists() and (out / "skipped.json").exists()
