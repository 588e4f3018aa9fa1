"""``build.table`` column steps: category codes, missing indicators, date expansion."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from datafuel import build
from datafuel.errors import ConfigError, InputDataError
from datafuel.loaders import ShardSet
from datafuel.split import split

HOUSES = str(files("datafuel") / "data" / "houses.csv")


def read_all(directory: Path, name: str) -> np.ndarray:
    ds = ShardSet(directory, verify=True)
    return np.concatenate([b[name] for b in ds.iter_batches(4096)])


def city_table(n: int = 300, seed: int = 0) -> pa.Table:
    """A table with a many-valued text column, holes in a numeric one and a timestamp."""
    rng = np.random.default_rng(seed)
    size = rng.normal(100, 20, n)
    size[rng.random(n) < 0.2] = np.nan
    start = datetime(2020, 1, 1)
    return pa.table(
        {
            "size": size,
            "rooms": rng.integers(1, 6, n).astype(np.float64),
            "city": [f"c{int(v)}" for v in rng.integers(0, 60, n)],
            "kind": [["flat", "house", None][int(v)] for v in rng.integers(0, 3, n)],
            "sold": pa.array(
                [
                    start + timedelta(days=int(d), hours=int(h))
                    for d, h in rng.integers(0, 900, (n, 2))
                ],
                pa.timestamp("s"),
            ),
            "price": rng.normal(500, 50, n),
        }
    )


def test_defaults_are_unchanged_one_hot(tmp_path: Path) -> None:
    s = build.table(HOUSES, tmp_path / "a", target="price", drop=["id"])
    assert "column_steps" not in s
    extra = json.loads((tmp_path / "a" / "recipe.json").read_text())["extra"]
    assert "column_steps" not in extra
    assert ShardSet(tmp_path / "a" / "train").fields.keys() == {"x", "y"}


def test_codes_use_train_vocabularies_and_unknown_is_zero(tmp_path: Path) -> None:
    table = city_table()
    parts = split(table, (0.8, 0.1, 0.1), seed=0)
    train_cities = set(parts.train.column("city").to_pylist())
    src = tmp_path / "t.parquet"
    # a city only in the test split: its code must be 0 (no vocabulary fitted on test)
    test_rows = parts.indices["test"]
    cities = table.column("city").to_pylist()
    cities[int(test_rows[0])] = "atlantis"
    pq.write_table(table.set_column(2, "city", pa.array(cities)), src)
    s = build.table(src, tmp_path / "o", target="price", drop=["sold"], categorical="codes")
    assert s["column_steps"]["cardinalities"] == {
        "city": len(train_cities) + 1,
        "kind": 3,
    }
    train = ShardSet(tmp_path / "o" / "train")
    assert train.fields["cat"].dtype == np.dtype("int64") and train.fields["cat"].shape == (2,)
    meta = train.metadata["categorical"]
    assert meta == {
        "field": "cat",
        "columns": ["city", "kind"],
        "cardinalities": [len(train_cities) + 1, 3],
        "unknown_code": 0,
    }
    assert train.metadata["columns"] == ["size", "rooms"]  # no one-hot columns
    test_codes = read_all(tmp_path / "o" / "test", "cat")
    vocab = sorted(train_cities)
    want = [0 if c not in vocab else vocab.index(c) + 1 for c in np.array(cities)[test_rows]]
    np.testing.assert_array_equal(test_codes[:, 0], want)
    assert test_codes[0, 0] == 0
    kinds = np.array(table.column("kind").to_pylist(), dtype=object)[test_rows]
    np.testing.assert_array_equal(
        test_codes[:, 1], [0 if k is None else ["flat", "house"].index(k) + 1 for k in kinds]
    )
    assert read_all(tmp_path / "o" / "train", "cat").max(axis=0).tolist() == [len(vocab), 2]


def test_codes_per_column_and_the_one_hot_limit(tmp_path: Path) -> None:
    src = tmp_path / "t.parquet"
    pq.write_table(city_table(), src)
    with pytest.raises(InputDataError, match="city.*max-categories"):
        build.table(src, tmp_path / "a", target="price", drop=["sold"])
    s = build.table(
        src, tmp_path / "b", target="price", drop=["sold"], categorical={"city": "codes"}
    )
    assert s["columns"][2:] == ["kind=flat", "kind=house"]
    assert ShardSet(tmp_path / "b" / "val").metadata["categorical"]["columns"] == ["city"]
    with pytest.raises(ConfigError, match="size.*not a text feature"):
        build.table(
            src, tmp_path / "c", target="price", drop=["sold"], categorical={"size": "codes"}
        )
    with pytest.raises(ConfigError, match="onehot or codes"):
        build.table(src, tmp_path / "d", target="price", categorical="embed")


def test_missing_indicators_follow_train_missingness(tmp_path: Path) -> None:
    src = tmp_path / "t.parquet"
    pq.write_table(city_table(), src)
    s = build.table(
        src,
        tmp_path / "o",
        target="price",
        drop=["sold"],
        categorical="codes",
        missing_indicators=True,
        max_missing=1.0,
    )
    assert s["columns"] == ["size", "rooms", "missingindicator_size"]
    assert s["column_steps"]["missing_indicators"] == ["missingindicator_size"]
    table = city_table()
    parts = split(table, (0.8, 0.1, 0.1), seed=0)
    for name in ("train", "test"):
        x = read_all(tmp_path / "o" / name, "x")
        assert x.dtype == np.float32 and x.shape[1] == 3
        raw = table.column("size").to_numpy()[parts.indices[name]]
        np.testing.assert_array_equal(x[:, 2], np.isnan(raw).astype(np.float32))
        assert not np.isnan(x[:, 0]).any()  # imputed, and the indicator keeps what was missing


def test_dates_are_expanded_with_a_train_origin(tmp_path: Path) -> None:
    src = tmp_path / "t.parquet"
    table = city_table()
    pq.write_table(table, src)
    with pytest.raises(InputDataError, match="sold"):
        build.table(src, tmp_path / "a", target="price", categorical="codes")
    s = build.table(
        src,
        tmp_path / "o",
        target="price",
        categorical="codes",
        expand_dates=True,
        scale="none",
        winsorize=None,
        impute="median",
        max_missing=1.0,
    )
    parts = ("year", "month", "day", "dayofweek", "elapsed")
    assert s["columns"] == ["size", "rooms", *[f"sold_{p}" for p in parts]]
    assert s["column_steps"]["date_columns"] == ["sold"]
    sp = split(table, (0.8, 0.1, 0.1), seed=0)
    sold = table.column("sold").to_pylist()
    origin = min(sold[i] for i in sp.indices["train"])
    x = read_all(tmp_path / "o" / "test", "x")
    for row, i in zip(x, sp.indices["test"], strict=True):
        t = sold[i]
        assert row[2:6].tolist() == [t.year, t.month, t.day, t.weekday()]
        assert row[6] == pytest.approx((t - origin).total_seconds() / 86400, rel=1e-6)
    recipe = json.loads((tmp_path / "o" / "recipe.json").read_text())
    assert recipe["feature_names"] == s["columns"]
    fitted = recipe["extra"]["column_steps"]["date_expander"]["fitted"]
    assert fitted["origin_"]["data"] == [(origin - datetime(1970, 1, 1)).total_seconds()]


def test_dates_from_a_csv_are_read_as_timestamps(tmp_path: Path) -> None:
    table = city_table(120)
    src = tmp_path / "t.csv"
    pacsv.write_csv(table.drop_columns(["city"]), src)
    s = build.table(src, tmp_path / "o", target="price", expand_dates=True)
    assert "sold_elapsed" in s["columns"] and s["columns"][-2:] == ["kind=flat", "kind=house"]
