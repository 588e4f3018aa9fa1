"""Deduplicating builds are deterministic: two local runs write identical files, and the Ray
engine writes the local engine's files (skipped with the reason when Ray is not installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from engine_helpers import same_tree
from test_dedup_builds import _image_folder, _text_corpus

from datafuel import build

# .build-text.json holds timings; every other file, dedup.json included, must be identical
TIMINGS = {".build-text.json"}


def _table_csv(path: Path) -> Path:
    rng = np.random.default_rng(2)
    n = 240
    t = pa.table({"a": rng.normal(size=n), "b": rng.integers(0, 5, n), "y": rng.normal(size=n)})
    dups = t.take(pa.array(np.repeat(np.arange(0, 60, 3), 2)))  # 20 rows twice more each
    pacsv.write_csv(pa.concat_tables([t, dups]), path)
    return path


def _builds(tmp_path: Path) -> dict[str, Any]:
    """Each kind's build call over planted copies, with dedup on (and found)."""
    corpus, folder = tmp_path / "c.jsonl", tmp_path / "pics"
    _text_corpus(corpus)
    _image_folder(folder)
    csv = _table_csv(tmp_path / "t.csv")
    return {
        "text": lambda out, **kw: build.text(
            [corpus], out, vocab_size=400, shard_bytes=3000, dedup="near", **kw
        ),
        "images": lambda out, **kw: build.images(
            folder, out, dedup="near", fractions=(0.5, 0.25, 0.25), shard_bytes=20_000, **kw
        ),
        "table": lambda out, **kw: build.table(
            str(csv), out, target="y", impute="median", dedup="exact", shard_bytes=2000, **kw
        ),
    }


def _dedup_ran(out: Path) -> dict[str, Any]:
    report = json.loads((out / "dedup.json").read_text())
    assert report["clusters"] > 0  # the planted copies were found: the comparison means something
    return report


@pytest.mark.parametrize("kind", ["text", "images", "table"])
def test_two_local_runs_write_identical_files(tmp_path: Path, kind: str) -> None:
    run = _builds(tmp_path)[kind]
    run(tmp_path / "one", dedup_keep="one")
    run(tmp_path / "two", dedup_keep="one")
    _dedup_ran(tmp_path / "one")
    assert set(same_tree(tmp_path / "one", tmp_path / "two")) <= TIMINGS


@pytest.mark.parametrize("kind", ["text", "images", "table"])
def test_ray_writes_the_local_files_with_dedup(ray_session: Any, tmp_path: Path, kind: str) -> None:
    run = _builds(tmp_path)[kind]
    local = run(tmp_path / "local")
    remote = run(tmp_path / "ray", engine="ray")
    assert remote["dedup"] == local["dedup"] and remote["counts"] == local["counts"]
    assert _dedup_ran(tmp_path / "ray") == _dedup_ran(tmp_path / "local")
    assert set(same_tree(tmp_path / "local", tmp_path / "ray")) <= TIMINGS
