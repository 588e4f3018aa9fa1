"""``_common_metadata``: every Parquet reader sees every column, also those added by drift."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from ingest_server import FakeAPI, listings

from datafuel.errors import RetryExhaustedError
from datafuel.ingest import ingest, read_ingested

#: bedrooms turns float and garage appears at record 100: the first part lacks garage
N, DRIFT = 150, 100


def _ingest(tmp_path: Path, **kw: object) -> Path:
    out = tmp_path / "o"
    with FakeAPI(listings(N, drift_at=DRIFT), page_size=10, style="page") as api:
        ingest(api.url, out, records_path="data.items", page_size=10, **kw)  # type: ignore[arg-type]
    return out


def test_common_metadata_holds_the_unified_schema(tmp_path: Path) -> None:
    out = _ingest(tmp_path)
    common = pq.read_schema(out / "_common_metadata")
    assert common == read_ingested(out).schema
    assert "garage" in common.names and common.field("bedrooms").type == pa.float64()
    first = pq.read_schema(out / "part-00000000.parquet")
    assert "garage" not in first.names  # what a plain reader would take as the schema
    assert pq.read_metadata(out / "_common_metadata").num_row_groups == 0


def test_pyarrow_readers_given_the_common_schema_see_every_column(tmp_path: Path) -> None:
    out = _ingest(tmp_path)
    expected = read_ingested(out)
    # pyarrow.dataset.parquet_dataset reads the schema from the metadata file
    assert ds.parquet_dataset(str(out / "_common_metadata")).schema.names == expected.column_names
    common = pq.read_schema(out / "_common_metadata")
    table = pq.read_table(out, schema=common)
    assert table.column_names == expected.column_names and table.num_rows == N
    assert table.sort_by("id").equals(expected)
    dataset = ds.dataset(out, format="parquet", schema=common)
    assert dataset.to_table().sort_by("id").equals(expected)
    assert dataset.to_table().column("garage").null_count == DRIFT  # not dropped


def test_duckdb_union_by_name_sees_every_column(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed (.ci/run installs it)")
    out = _ingest(tmp_path)
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{out}/*.parquet', union_by_name=true) ORDER BY id")
    assert set(rel.columns) == set(read_ingested(out).column_names)
    rows = rel.fetchall()
    garage = rows[DRIFT][rel.columns.index("garage")]
    assert len(rows) == N and garage == DRIFT % 2


def test_a_killed_commit_leaves_common_metadata_of_the_committed_parts(tmp_path: Path) -> None:
    out = tmp_path / "o"
    faults = {5: ["500"] * 3}
    with FakeAPI(listings(N, drift_at=DRIFT), page_size=10, style="page", faults=faults) as api:
        ingest(api.url, out, records_path="data.items", page_size=10, max_pages=5)
        before = pq.read_schema(out / "_common_metadata")
        assert "garage" not in before.names
        # a killed commit of page 5: its part and _common_metadata landed, its state did not
        wider = before.append(pa.field("garage", pa.int64()))
        pq.write_metadata(wider, out / "_common_metadata")
        pq.write_table(wider.empty_table(), out / "part-00000005.parquet")
        with pytest.raises(RetryExhaustedError):  # the rerun discards them, then page 5 fails
            ingest(api.url, out, records_path="data.items", page_size=10, max_attempts=1)
    assert pq.read_schema(out / "_common_metadata") == before
    assert not (out / "part-00000005.parquet").exists()
    assert read_ingested(out).num_rows == 50
