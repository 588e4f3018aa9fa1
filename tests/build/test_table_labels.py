"""``build.table``'s targets and row identity: untouched val/test labels, train-only
clipping, ``--drop-missing-target``, ``--keep``, the split's row record, id-like columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_diabetes

from datafuel import build
from datafuel.build._tablecols import row_runs
from datafuel.errors import ConfigError, InputDataError
from datafuel.loaders import ShardSet


def read_all(directory: Path, name: str) -> Any:
    ds = ShardSet(directory, verify=True)
    batches = [b[name] for b in ds.iter_batches(4096)]
    if isinstance(batches[0], np.ndarray):
        return np.concatenate(batches)
    return [v for batch in batches for v in batch]


def rows_of(record: dict[str, Any], name: str) -> list[int]:
    runs = record["rows"][name]
    return [r for v in runs for r in ([v] if isinstance(v, int) else range(*v))]


def diabetes(tmp_path: Path, dtype: str = "float64") -> tuple[Path, pa.Table]:
    frame = load_diabetes(as_frame=True).frame
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(
        table.column_names.index("target"), "target", table.column("target").cast(dtype)
    )
    path = tmp_path / "diabetes.parquet"
    pq.write_table(table, path)
    return path, table


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_val_and_test_targets_are_the_source_values_train_alone_is_clipped(
    tmp_path: Path, dtype: str
) -> None:
    path, table = diabetes(tmp_path, dtype)
    s = build.table(path, tmp_path / "out", target="target", max_categories=2)
    source = table.column("target").to_numpy()
    for name in ("val", "test"):
        y = read_all(tmp_path / "out" / name, "y")
        want = source[rows_of(s["split"], name)]
        assert y.dtype == np.float32 and np.array_equal(y, want.astype(np.float32))  # bit for bit
    train_src = source[rows_of(s["split"], "train")].astype(np.float32)
    train = read_all(tmp_path / "out" / "train", "y")
    changed = int((train != train_src).sum())
    assert changed == s["clipped_train_targets"] > 0  # the summary counts the clipped ones
    # the changed ones now sit on the caps fitted on train
    assert set(train[train != train_src].tolist()) <= {train.min(), train.max()}
    off = build.table(path, tmp_path / "raw", target="target", clip_target=False)
    assert off["clipped_train_targets"] == 0
    assert np.array_equal(read_all(tmp_path / "raw" / "train", "y"), train_src)


def test_integer_labels_are_written_as_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.integers(0, 3, n) * 2**40  # beyond float32, within int64 and float64
    labels[0] = 2**53 + 2  # an int a float64 round trip would still hold; int64 is exact
    table = pa.table({"v": rng.normal(size=n), "label": pa.array(labels)})
    pq.write_table(table, tmp_path / "t.parquet")
    s = build.table(tmp_path / "t.parquet", tmp_path / "out", target="label", winsorize=None)
    for name in ("train", "val", "test"):
        y = read_all(tmp_path / "out" / name, "y")
        assert y.dtype == np.int64 and np.array_equal(y, labels[rows_of(s["split"], name)])


def test_drop_missing_target_counts_per_split_and_the_default_refuses(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 400
    y = rng.normal(size=n)
    y[rng.random(n) < 0.1] = np.nan
    table = pa.table(
        {"v": rng.normal(size=n), "w": rng.normal(size=n), "y": pa.array(y, from_pandas=True)}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    first = int(np.flatnonzero(np.isnan(y))[0])
    with pytest.raises(InputDataError, match=f"first at row {first}.*--drop-missing-target"):
        build.table(tmp_path / "t.parquet", tmp_path / "o", target="y")
    s = build.table(tmp_path / "t.parquet", tmp_path / "o", target="y", drop_missing_target=True)
    missing = s["dropped_missing_target"]
    assert sum(missing.values()) == int(np.isnan(y).sum()) and min(missing.values()) > 0
    assert s["split"]["dropped_missing_target"] == missing
    # the split is made on every row first: a row keeps the split it would have had
    full = build.table(
        tmp_path / "t.parquet", tmp_path / "f", target="v", drop=["y"], winsorize=None
    )
    for name in ("train", "val", "test"):
        kept = rows_of(s["split"], name)
        assert set(kept) <= set(rows_of(full["split"], name))
        assert len(kept) == s["counts"][name] == len(rows_of(full["split"], name)) - missing[name]
        assert np.isfinite(y[kept]).all()
        if name != "train":  # (train targets are clipped)
            assert np.array_equal(read_all(tmp_path / "o" / name, "y"), y[kept].astype(np.float32))


@pytest.mark.parametrize("kind", ["int", "text"])
def test_keep_stores_the_column_unchanged_and_not_as_a_feature(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    n = 250
    ids = np.arange(10**12, 10**12 + n) if kind == "int" else [f"row-é{i}" for i in range(n)]
    v = rng.normal(size=n)
    v[::5] = np.nan  # with --max-missing 0 these rows are dropped: ids must follow
    table = pa.table(
        {"id": pa.array(ids), "v": pa.array(v, from_pandas=True), "w": rng.normal(size=n)}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    s = build.table(
        tmp_path / "t.parquet",
        tmp_path / "out",
        keep=["id"],
        max_missing=0.0,
        impute="none",
        winsorize=None,
        scale="none",
    )
    assert s["columns"] == ["v", "w"] and s["split"]["kept"] == {"id": "id"}
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert record == s["split"]
    for name in ("train", "val", "test"):
        got = read_all(tmp_path / "out" / name, "id")
        rows = rows_of(record, name)
        assert all(np.isfinite(v[r]) for r in rows)  # sparse rows are not listed
        want = table.column("id").take(pa.array(rows, pa.int64())).to_pylist()
        if kind == "int":
            assert got.dtype == np.int64 and got.tolist() == want
        else:
            assert [b.decode("utf-8") for b in got] == want
        x = read_all(tmp_path / "out" / name, "x")
        np.testing.assert_allclose(x[:, 1], table.column("w").to_numpy()[rows], rtol=1e-6)


def test_keep_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    t = pa.table({"k": pa.array([1, None] * 20), "v": np.arange(40.0)[::-1], "y": np.ones(40)})
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(InputDataError, match="--keep 'k': the column is missing at row 1"):
        build.table(tmp_path / "t.parquet", tmp_path / "o", keep=["k"])
    with pytest.raises(ConfigError, match="--keep 'y': the column is the target"):
        build.table(tmp_path / "t.parquet", tmp_path / "o", keep=["y"], target="y")
    with pytest.raises(InputDataError, match="--keep 'zz': no such column"):
        build.table(tmp_path / "t.parquet", tmp_path / "o", keep=["zz"])


def test_row_runs_are_compact_and_round_trip() -> None:
    rows = np.array([0, 1, 2, 5, 7, 8, 9, 20])
    runs = row_runs(rows)
    assert runs == [[0, 3], 5, [7, 10], 20]
    assert [r for v in runs for r in ([v] if isinstance(v, int) else range(*v))] == rows.tolist()
    assert row_runs(np.array([], np.int64)) == []


@pytest.mark.parametrize(
    ("name", "values", "why"),
    [
        ("row", np.arange(5, 105), "unique integers that increase row by row"),
        ("id", np.random.default_rng(0).permutation(100), "named like an id"),
        ("user_id", np.random.default_rng(0).integers(0, 9, 100), "named like an id"),
        ("orderId", np.random.default_rng(0).integers(0, 9, 100), "named like an id"),
    ],
)
def test_id_like_columns_are_refused_until_dropped_kept_or_allowed(
    tmp_path: Path, name: str, values: np.ndarray, why: str
) -> None:
    rng = np.random.default_rng(4)
    t = pa.table({name: values, "v": rng.normal(size=100), "y": rng.normal(size=100)})
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(InputDataError) as err:
        build.table(tmp_path / "t.parquet", tmp_path / "o", target="y")
    msg = str(err.value)
    assert f"column {name!r} looks like a row id ({why})" in msg and err.value.field == name
    for fix in (f"--drop {name}", f"--keep {name}", f"--allow-id {name}"):
        assert fix in msg
    # the three ways past
    s = build.table(tmp_path / "t.parquet", tmp_path / "a", target="y", drop=[name])
    assert s["columns"] == ["v"]
    s = build.table(tmp_path / "t.parquet", tmp_path / "b", target="y", keep=[name])
    assert s["columns"] == ["v"] and name in ShardSet(tmp_path / "b" / "train").fields
    s = build.table(tmp_path / "t.parquet", tmp_path / "c", target="y", allow_id=[name])
    assert s["columns"] == [name, "v"]


def test_ordinary_integer_columns_are_not_id_like(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    t = pa.table(
        {
            "paid": rng.integers(0, 100, 100),  # ends in "id" but is no id
            "year": np.sort(rng.integers(1950, 2020, 100)),  # increasing with repeats
            "small": np.arange(10)[:10].repeat(10)[:100],
            "y": rng.normal(size=100),
        }
    )
    pq.write_table(t, tmp_path / "t.parquet")
    s = build.table(tmp_path / "t.parquet", tmp_path / "o", target="y")
    assert s["columns"] == ["paid", "year", "small"]
    with pytest.raises(InputDataError, match="--allow-id 'nope': no such column"):
        build.table(tmp_path / "t.parquet", tmp_path / "o2", target="y", allow_id=["nope"])
