"""The non-JSON output of build text|images|table: one dedup line (clusters found, records
dropped) when dedup reported something, none for --dedup none or a default build without
copies."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from test_audit_cli import _corpus, _pictures

from datafuel.cli import main


def _dedup_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("dedup")]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    capsys.readouterr()
    assert main(list(args)) == 0
    return _dedup_lines(capsys.readouterr().out)


def test_build_text_prints_one_dedup_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _corpus(tmp_path / "c.jsonl")
    base = ["build", "text", str(tmp_path / "c.jsonl"), "--vocab-size", "400"]
    got = _run(
        capsys, *base, "--out", str(tmp_path / "a"), "--dedup", "near", "--dedup-keep", "one"
    )
    assert got == [
        "dedup (near, keep one): 60 cluster(s) of copies, 60 duplicate document(s), "
        f"{json.loads((tmp_path / 'a' / 'dedup.json').read_text())['moved']} moved to their "
        f"cluster's split, 60 dropped -> {tmp_path / 'a'}/dedup.json"
    ]
    assert _run(capsys, *base, "--out", str(tmp_path / "b"), "--dedup", "none") == []
    got = _run(capsys, *base, "--out", str(tmp_path / "c"))  # the default: exact, none found
    assert got == []


def test_build_images_prints_one_dedup_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pictures(tmp_path / "in")
    base = ["build", "images", str(tmp_path / "in")]
    got = _run(capsys, *base, "--out", str(tmp_path / "a"), "--dedup", "near")
    assert len(got) == 1 and got[0].startswith("dedup (near, keep all): 6 cluster(s) of copies")
    assert "12 duplicate image(s)" in got[0] and ", 0 dropped -> " in got[0]
    got = _run(capsys, *base, "--out", str(tmp_path / "b"), "--dedup", "exact")
    assert len(got) == 1 and got[0].startswith("dedup (exact, keep all): 0 cluster(s)")
    assert _run(capsys, *base, "--out", str(tmp_path / "c"), "--dedup", "none") == []


def test_build_table_prints_one_dedup_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    t = pa.table(
        {"a": rng.normal(size=200), "b": rng.integers(0, 9, 200), "y": rng.normal(size=200)}
    )
    pacsv.write_csv(pa.concat_tables([t, t.slice(0, 10)]), tmp_path / "t.csv")
    base = ["build", "table", str(tmp_path / "t.csv"), "--target", "y"]
    got = _run(capsys, *base, "--out", str(tmp_path / "a"), "--dedup-keep", "one")
    assert len(got) == 1 and got[0].startswith("dedup (exact, keep one): 10 cluster(s) of copies")
    assert "10 duplicate row(s)" in got[0] and ", 10 dropped -> " in got[0]
    houses = str(files("datafuel") / "data" / "houses.csv")
    plain = ["build", "table", houses, "--target", "price", "--drop", "id"]
    assert _run(capsys, *plain, "--out", str(tmp_path / "h")) == []
