from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_server import FakeAPI, listings

from datafuel.errors import SchemaError
from datafuel.ingest import SchemaTracker, flatten_record, ingest, read_ingested
from datafuel.ingest._schema import merge_types


def test_flatten_nested_objects_lists_and_empty_objects() -> None:
    rec = {
        "id": 1,
        "loc": {"lat": 1.5, "geo": {"h": 3}},
        "tags": ["a", {"b": 2}],
        "meta": {},
        "n": None,
    }
    assert flatten_record(rec) == {
        "id": 1,
        "loc.lat": 1.5,
        "loc.geo.h": 3,
        "tags": '["a",{"b":2}]',
        "meta": None,
        "n": None,
    }
    assert json.loads(flatten_record({"x": [1, [2, 3]]})["x"]) == [1, [2, 3]]


def test_flatten_name_collision_is_an_error() -> None:
    with pytest.raises(SchemaError, match="'a.b'"):
        flatten_record({"a.b": 1, "a": {"b": 2}})


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("int", "int", "int"),
        ("int", "float", "float"),
        ("float", "int", "float"),
        ("null", "bool", "bool"),
        ("string", "null", "string"),
        ("bool", "int", "string"),
        ("int", "string", "string"),
        ("float", "bool", "string"),
    ],
)
def test_merge_types_lattice(a: str, b: str, want: str) -> None:
    assert merge_types(a, b) == want
    assert merge_types(b, a) == want


def test_int_to_float_only_when_lossless() -> None:
    t = SchemaTracker()
    t.observe([{"x": 2**60}], page=0)
    events = t.observe([{"x": 0.5}], page=1)
    assert t.columns["x"] == "string"
    assert [(e.kind, e.old_type, e.type) for e in events] == [("type_change", "int", "string")]
    table = t.to_table([{"x": 0.5}, {"x": 2**60}])
    assert table.column("x").to_pylist() == ["0.5", str(2**60)]


def test_drift_events_new_missing_and_type_change() -> None:
    t = SchemaTracker()
    assert t.observe([{"a": 1, "b": "x"}, {"a": 2}], page=0) == []  # the first page is the baseline
    ev = t.observe([{"a": 1.5, "c": True}], page=1)
    assert sorted((e.kind, e.field) for e in ev) == [
        ("missing_field", "b"),
        ("new_field", "c"),
        ("type_change", "a"),
    ]
    assert t.observe([{"a": 1, "c": False}], page=2) == []  # b still missing: reported once
    ev = t.observe([{"a": 1, "b": None, "c": 1}], page=3)
    assert [(e.kind, e.field, e.old_type, e.type) for e in ev] == [
        ("type_change", "c", "bool", "string")
    ]
    table = t.to_table([{"a": 1, "c": True}, {"b": "y"}])
    assert table.schema == pa.schema([("a", pa.float64()), ("b", pa.string()), ("c", pa.string())])
    assert table.to_pylist() == [
        {"a": 1.0, "b": None, "c": "true"},
        {"a": None, "b": "y", "c": None},
    ]


def test_schema_change_mid_stream_end_to_end(tmp_path: Path) -> None:
    recs = listings(60, drift_at=30)
    recs[45]["sqft"] = "unknown"  # int column widened to string mid-stream
    out = tmp_path / "o"
    with FakeAPI(recs, page_size=10) as api:
        r = ingest(api.url, out, paginate="cursor:next", records_path="data.items", prefetch=False)
    assert r.schema == {
        "id": "int",
        "price": "float",
        "sqft": "string",
        "bedrooms": "float",
        "location.lat": "float",
        "location.lon": "float",
        "tags": "string",
        "garage": "int",
    }
    drift = [json.loads(line) for line in (out / "_drift.jsonl").read_text().splitlines()]
    assert {
        "page": 3,
        "kind": "type_change",
        "field": "bedrooms",
        "old_type": "int",
        "type": "float",
    } in drift
    assert {"page": 3, "kind": "new_field", "field": "garage", "type": "int"} in drift
    assert {
        "page": 4,
        "kind": "type_change",
        "field": "sqft",
        "old_type": "int",
        "type": "string",
    } in drift
    assert r.drift_events == len(drift) == 3
    state = json.loads((out / "_state.json").read_text())
    assert state["schema"]["columns"] == r.schema
    # parts keep the schema as of their page; later parts carry every column so far
    assert pq.read_schema(out / "part-00000000.parquet").field("bedrooms").type == pa.int64()
    assert "garage" not in pq.read_schema(out / "part-00000000.parquet").names
    assert pq.read_schema(out / "part-00000005.parquet").field("sqft").type == pa.string()
    table = read_ingested(out)
    rows = table.to_pylist()
    assert len(rows) == 60
    for rec, row in zip(recs, rows, strict=True):
        assert row["id"] == rec["id"]
        assert row["bedrooms"] == float(rec["bedrooms"])
        assert row["garage"] == rec.get("garage")
        assert row["sqft"] == (None if rec["sqft"] is None else str(rec["sqft"]))
        assert row["location.lat"] == rec.get("location", {}).get("lat")
        assert json.loads(row["tags"]) == rec["tags"]


def test_read_ingested_without_state_unifies_permissively(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int64())}), tmp_path / "p0.parquet")
    pq.write_table(pa.table({"a": pa.array([0.5]), "b": pa.array(["x"])}), tmp_path / "p1.parquet")
    t = read_ingested(tmp_path)
    assert t.to_pylist() == [{"a": 1.0, "b": None}, {"a": 2.0, "b": None}, {"a": 0.5, "b": "x"}]
    with pytest.raises(SchemaError):
        read_ingested(tmp_path, columns=["zzz"])
