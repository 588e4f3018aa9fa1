"""``datafuel demo`` end to end: what it prints, and what each step leaves on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datafuel.demo import IMAGE_CLASSES, sample_listings
from datafuel.ingest import DriftLog, read_ingested
from datafuel.loaders import ShardSet


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One full ``datafuel demo --workdir`` run shared by the tests below: (workdir, stdout)."""
    workdir = tmp_path_factory.mktemp("demo") / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "datafuel", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return workdir, proc.stdout


def test_demo_prints_every_step(demo_run: tuple[Path, str]) -> None:
    workdir, stdout = demo_run
    assert "demo finished" in stdout and f"output in {workdir}" in stdout
    for step in ("[ingest]", "[table]", "[images]", "[text]", "[loader]"):
        assert step in stdout, f"demo step {step} did not run:\n{stdout}"
    # what each stage must show: retries and drift, the outlier capped, images trained,
    # resampling keeping the tail, the loader's starvation report
    assert "retries" in stdout and "drift" in stdout
    assert "999,000,000" in stdout
    assert "val accuracy" in stdout
    assert "tail kept" in stdout
    assert "starvation" in stdout


def test_ingest_step_wrote_every_listing_once(demo_run: tuple[Path, str]) -> None:
    out = demo_run[0] / "ingest" / "listings"
    table = read_ingested(out)
    truth = sample_listings(seed=0)
    assert table.num_rows == len(truth) == 300
    by_id = {r["id"]: r for r in table.to_pylist()}
    assert sorted(by_id) == [r["id"] for r in truth]  # every record exactly once
    for rec in truth:
        got = by_id[rec["id"]]
        assert got["price"] == rec["price"]
        assert got["sqft"] == rec["sqft"]  # nulls included
        assert got.get("location.lat") == rec.get("location", {}).get("lat")
    state = json.loads((out / "_state.json").read_text())
    assert state["status"] == "done" and state["records"] == 300 and state["retries"] >= 2
    drift = {(e["kind"], e["field"]) for e in DriftLog(out).read()}
    assert drift == {("type_change", "bedrooms"), ("new_field", "bathrooms")}


def test_table_step_wrote_split_shards_and_recipe(demo_run: tuple[Path, str]) -> None:
    root = demo_run[0] / "table"
    split = json.loads((root / "split.json").read_text())
    recipe = json.loads((root / "recipe.json").read_text())
    assert recipe["target_steps"], "the target winsorizer is missing from recipe.json"
    rows = 0
    for name in ("train", "val", "test"):
        shards = ShardSet(root / name, verify=True)
        assert len(shards) == split["counts"][name] > 0
        assert shards.metadata["target"] == "price"
        batch = next(shards.iter_batches(len(shards)))
        assert batch["x"].dtype == np.float32 and np.isfinite(batch["x"]).all()
        assert batch["x"].shape[1] == len(shards.metadata["columns"])
        # the winsorizer's caps hold: no 999,000,000 price reaches the shards
        assert float(np.max(batch["y"])) < 999_000_000
        rows += len(shards)
    assert rows == split["total"] == 300  # the table step read the ingested listings


def test_images_step_wrote_class_shards(demo_run: tuple[Path, str]) -> None:
    root = demo_run[0]
    src = [p for p in (root / "images-src").rglob("*.jpg")]
    assert len(src) == 30 * len(IMAGE_CLASSES)
    split = json.loads((root / "images" / "split.json").read_text())
    total = 0
    for name in ("train", "val"):
        shards = ShardSet(root / "images" / name, verify=True)
        assert len(shards) == split["counts"][name] > 0
        assert shards.metadata["class_names"] == list(IMAGE_CLASSES)
        labels = next(shards.iter_batches(len(shards)))["label"]
        assert set(np.unique(labels).tolist()) <= set(range(len(IMAGE_CLASSES)))
        total += len(shards)
    assert total == len(src)  # none skipped: grayscale and CMYK JPEGs decode too


def test_text_step_wrote_tokens_tokenizer_and_resampled_shards(demo_run: tuple[Path, str]) -> None:
    root = demo_run[0] / "text"
    split = json.loads((root / "split.json").read_text())
    tokenizer = json.loads((root / "tokenizer.json").read_text())
    assert tokenizer["model"]["type"] == "BPE"
    for name in ("train", "val", "test"):
        shards = ShardSet(root / name, verify=True)
        assert len(shards) == split["counts"][name] > 0
        assert shards.metadata["vocab_size"] == 512
        stream = shards.token_stream("tokens")
        assert stream.num_tokens == split["tokens"][name] > 0
    resampled = ShardSet(root / "train-resampled", verify=True)
    assert len(resampled) == split["counts"]["train"]
    report = json.loads((root / "train-resampled" / "resample_report.json").read_text())
    assert report["counts"]["tokens"] == split["tokens"]["train"]
    assert 0 < report["counts"]["fraction_changed"] < 1


def test_loader_step_wrote_rows_and_tokens(demo_run: tuple[Path, str]) -> None:
    root = demo_run[0]
    rows = ShardSet(root / "loader-rows", verify=True)
    assert len(rows) == 4096 and rows.fields["x"].shape == (16,)
    tokens = ShardSet(root / "loader-tokens", verify=True)
    assert len(tokens) == 64 and tokens.fields["tokens"].kind == "ragged"
