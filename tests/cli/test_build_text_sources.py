"""``datafuel build text`` from Parquet / Arrow inputs, and their bad text fields."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafuel.cli import main
from datafuel.demo import generate_documents
from datafuel.loaders import ShardSet


def test_build_text_from_a_parquet_directory_with_text_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = list(generate_documents(60, seed=2))
    (tmp_path / "pq").mkdir()
    for k in range(3):
        part = pa.table({"content": docs[k * 20 : (k + 1) * 20], "n": range(20)})
        pq.write_table(part, tmp_path / "pq" / f"part-{k}.parquet")
    argv = ["build", "text", str(tmp_path / "pq"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--text-field", "content", "--vocab-size", "300"]) == 0
    out = capsys.readouterr().out
    assert "read 60 documents from 3 file(s)" in out
    total = sum(len(ShardSet(tmp_path / "out" / n)) for n in ("train", "val", "test"))
    assert total == 60


@pytest.mark.parametrize(
    ("table", "field", "needle"),
    [
        (pa.table({"body": ["x"]}), "text", "c.parquet: row 0 (0-based): no 'text' column"),
        (
            pa.table({"text": [3]}),
            "text",
            "c.parquet: row 0 (0-based): field 'text' must be a string",
        ),
        (pa.table({"t": ["a", "b", None]}), "t", "c.parquet: row 2 (0-based): field 't' is null"),
    ],
)
def test_bad_text_fields_are_one_line_naming_file_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: pa.Table, field: str, needle: str
) -> None:
    pq.write_table(table, tmp_path / "c.parquet")
    argv = ["build", "text", str(tmp_path / "c.parquet"), "--text-field", field]
    assert main([*argv, "--out", str(tmp_path / "out"), "--vocab-size", "300"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("datafuel: error:") and needle in err and "\n" not in err
