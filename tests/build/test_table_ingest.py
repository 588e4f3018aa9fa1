"""``datafuel ingest`` then ``datafuel build table`` on the drift ingest records.

A real HTTP server on 127.0.0.1 (:class:`datafuel.demo.FakeAPI`) serves listings whose
types drift mid-stream, as ingest's own tests do: ``bedrooms`` int -> float and a new
``garage`` column (page 3), ``price`` float -> string (page 4), and in one case a
``sqft`` that turns to the text ``"unknown"`` (int -> string, truly mixed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafuel import build
from datafuel.build._tablecols import read_source
from datafuel.cli import main
from datafuel.demo import FakeAPI
from datafuel.errors import InputDataError
from datafuel.ingest import read_ingested
from datafuel.loaders import ShardSet


def listings(n: int, *, mixed: bool = False) -> list[dict[str, Any]]:
    """Listings that drift: int->float and a new field at 30, float->string at 40."""
    out = []
    for i in range(n):
        rec: dict[str, Any] = {
            "id": 1000 + i,
            "price": 100_000.0 + 1234.5 * i,
            "sqft": 800 + (i * 37) % 2000,
            "bedrooms": 1 + i % 5,
            "location": {"lat": 47.0 + (i * 13 % 50) / 1000, "lon": -122.0 - i / 1000},
        }
        if i % 7 == 3:
            rec["sqft"] = None
        if i >= 30:
            rec["bedrooms"] += 0.5
            rec["garage"] = i % 2
        if i >= 40:
            rec["price"] = f"{rec['price']:.2f}"  # the API now sends the price as text
        out.append(rec)
    if mixed:
        out[45]["sqft"] = "unknown"
    return out


def ingest_cli(recs: list[dict[str, Any]], out: Path) -> None:
    with FakeAPI(recs, page_size=10, style="cursor", records_path="data.items") as api:
        argv = ["ingest", api.url, "--out", str(out), "--paginate", "cursor:next"]
        code = main([*argv, "--records-path", "data.items"])
    assert code == 0


def all_rows(directory: Path, name: str) -> np.ndarray:
    ds = ShardSet(directory, verify=True)
    return np.concatenate([b[name] for b in ds.iter_batches(4096)])


def test_ingest_then_build_table_survives_every_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recs = listings(80)
    ingest_cli(recs, tmp_path / "raw")
    drift = [json.loads(x) for x in (tmp_path / "raw" / "_drift.jsonl").read_text().splitlines()]
    assert {(d["field"], d.get("old_type"), d["type"]) for d in drift} == {
        ("bedrooms", "int", "float"),
        ("garage", None, "int"),
        ("price", "float", "string"),
    }
    assert read_ingested(tmp_path / "raw").schema.field("price").type == pa.string()
    capsys.readouterr()
    out = tmp_path / "out"
    argv = ["build", "table", str(tmp_path / "raw"), "--out", str(out), "--target", "price"]
    assert main([*argv, "--keep", "id", "--impute", "median", "--max-missing", "1"]) == 0
    text = capsys.readouterr().out
    # the summary says the drift-widened price was read back as numbers
    assert "price: widened to text by ingest drift, every value a number: read as float64" in text
    columns = ShardSet(out / "train").metadata["columns"]
    assert columns == ["sqft", "bedrooms", "location.lat", "location.lon", "garage"]
    by_id = {r["id"]: r for r in recs}
    for name in ("train", "val", "test"):
        ids, y = all_rows(out / name, "id"), all_rows(out / name, "y")
        assert ids.dtype == np.int64
        if name != "train":  # exactly the price the API sent, whether number or text
            want = np.array([float(by_id[i]["price"]) for i in ids.tolist()], np.float32)
            assert np.array_equal(y, want)
    total = sum(len(ShardSet(out / n)) for n in ("train", "val", "test"))
    assert total == 80


def test_a_truly_mixed_column_names_value_page_and_flag_and_drop_gets_past(
    tmp_path: Path,
) -> None:
    ingest_cli(listings(80, mixed=True), tmp_path / "raw")
    with pytest.raises(InputDataError) as err:
        build.table(tmp_path / "raw", tmp_path / "out", target="price", drop=["id"])
    msg = str(err.value)
    assert "column 'sqft'" in msg and "'unknown'" in msg and "--drop sqft" in msg
    # record 45 is on page 4; a group commit puts several pages in one part
    part = f"part-{int(str(err.value.page).split('-')[0]):08d}.parquet"
    assert f"row 45 ({part}, page" in msg
    pages = [int(p) for p in str(err.value.page).split("-")]
    assert pages[0] <= 4 <= pages[-1]
    s = build.table(
        tmp_path / "raw", tmp_path / "out", target="price", drop=["id", "sqft"], impute="median"
    )
    assert s["coerced_columns"] == {"price": "float64"} and "sqft" not in s["columns"]


def test_drop_happens_before_the_parts_are_merged(tmp_path: Path) -> None:
    """Parquet parts without ingest's state: a double/string column cannot be merged."""
    d = tmp_path / "parts"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        price = rng.normal(5.0, 1.0, 30)
        pq.write_table(
            pa.table(
                {
                    "v": rng.normal(size=30),
                    "price": price if k == 0 else pa.array([f"{p:.3f}" for p in price]),
                    "y": rng.normal(size=30),
                }
            ),
            d / f"p{k}.parquet",
        )
    with pytest.raises(InputDataError, match=r"column 'price' is double in 'p0.parquet' but"):
        build.table(d, tmp_path / "out", target="y")
    with pytest.raises(InputDataError, match="--drop price"):
        build.table(d, tmp_path / "out", target="y")
    s = build.table(d, tmp_path / "out", target="y", drop=["price"], knn_k=2)
    assert s["columns"] == ["v"]


def test_coercion_is_only_for_lossless_numbers(tmp_path: Path) -> None:
    recs = listings(60)
    recs[50]["price"] = "9007199254740993"  # 2**53 + 1: not exactly a float64
    ingest_cli(recs, tmp_path / "raw")
    with pytest.raises(InputDataError, match="'9007199254740993', which is not losslessly"):
        read_source(tmp_path / "raw")
    assert read_source(tmp_path / "raw", drop=["price"]).coerced == {}
