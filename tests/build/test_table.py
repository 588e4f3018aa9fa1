"""``build.table`` in Python: real tables, the fit on train only, columns, labels, bad input."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from engine_helpers import same_tree
from sklearn.datasets import load_breast_cancer, load_diabetes

import datafuel.build._table as build_table
from datafuel import build
from datafuel.engine import LocalEngine
from datafuel.errors import ConfigError, InputDataError
from datafuel.loaders import ShardSet
from datafuel.recipe import Recipe
from datafuel.split import split

HOUSES = str(files("datafuel") / "data" / "houses.csv")


def read_all(directory: Path, name: str) -> np.ndarray:
    ds = ShardSet(directory, verify=True)
    return np.concatenate([b[name] for b in ds.iter_batches(4096)])


def sklearn_table(loader: Any, tmp_path: Path, *, holes: float = 0.0) -> Path:
    """A scikit-learn bundled data set as a CSV, with ``holes`` of its feature values blanked."""
    data = loader(as_frame=True).frame
    rng = np.random.default_rng(0)
    features = [c for c in data.columns if c != "target"]
    for c in features:
        data.loc[rng.random(len(data)) < holes, c] = np.nan
    path = tmp_path / f"{loader.__name__}.csv"
    data.to_csv(path, index=False)
    return path


def test_houses_summary_and_the_fit_used_train_rows_only(tmp_path: Path) -> None:
    s = build.table(HOUSES, tmp_path / "out", target="price", drop=["id"], seed=4)
    assert s["kind"] == "table" and s["engine"] == "local"
    table = pacsv.read_csv(HOUSES).drop_columns(["id"])
    assert sum(s["counts"].values()) + s["skipped"] == table.num_rows
    numeric = ["sqft", "bedrooms", "year_built", "location.lat", "location.lon"]
    assert s["columns"][:5] == numeric
    assert all(c.startswith("neighborhood=") for c in s["columns"][5:])
    assert s["fitted"] == {"recipe.json": s["recipe_fingerprint"]}
    assert json.loads((tmp_path / "out" / "split.json").read_text()) == s["split"]
    # val rows are what a recipe fitted on the train rows alone makes of them
    parts = split(table, (0.8, 0.1, 0.1), seed=4)
    y = table.column("price").to_numpy().astype(np.float64)
    mine = build_table._recipe(
        impute="knn", knn_k=5, max_missing=0.5, winsorize=(0.01, 0.99), scale="standard",
        clip_target=True,
    ).fit(parts.train.select(numeric), y[parts.indices["train"]])  # fmt: skip
    want, want_y, _ = mine.transform_rows(parts.val.select(numeric), y[parts.indices["val"]])
    np.testing.assert_allclose(read_all(tmp_path / "out" / "val", "x")[:, :5], want, rtol=1e-5)
    # val targets are the source prices, never clipped (the recipe's target step is train's)
    _, _, kept = mine.transform_rows(parts.val.select(numeric), None)
    want_y = y[parts.indices["val"]][kept].astype(np.float32)
    assert np.array_equal(read_all(tmp_path / "out" / "val", "y"), want_y)
    leaky = build_table._recipe(
        impute="knn", knn_k=5, max_missing=0.5, winsorize=(0.01, 0.99), scale="standard",
        clip_target=True,
    ).fit(table.select(numeric), y)  # fmt: skip
    leak, _, _ = leaky.transform_rows(parts.val.select(numeric), None)
    assert not np.allclose(read_all(tmp_path / "out" / "val", "x")[:, :5], leak, rtol=1e-5)
    assert isinstance(Recipe.load(tmp_path / "out" / "recipe.json"), Recipe)


def test_real_tables_with_holes_come_out_finite_with_labels(tmp_path: Path) -> None:
    csv = sklearn_table(load_breast_cancer, tmp_path, holes=0.1)
    s = build.table(csv, tmp_path / "bc", target="target", knn_k=3)
    y = read_all(tmp_path / "bc" / "train", "y")
    x = read_all(tmp_path / "bc" / "train", "x")
    assert y.dtype == np.int64 and set(np.unique(y).tolist()) == {0, 1}  # class labels
    assert np.isfinite(x).all() and x.shape[1] == 30
    # standard-scaled on train: mean ~0, std ~1 per column
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=0.1)
    assert s["counts"]["val"] > 0 and s["counts"]["test"] > 0
    csv = sklearn_table(load_diabetes, tmp_path)
    build.table(csv, tmp_path / "db", target="target", scale="minmax", winsorize=None)
    y = read_all(tmp_path / "db" / "train", "y")
    x = read_all(tmp_path / "db" / "train", "x")
    assert y.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0  # a numeric target


def test_categories_come_from_train_and_unseen_values_are_zeros(tmp_path: Path) -> None:
    n = 300
    colour = ["red", "blue"] * (n // 2)
    table = pa.table({"when": np.arange(n), "v": np.arange(n, dtype=np.float64), "colour": colour})
    # time-ordered: the last rows (val/test) say "green", which train never saw
    table = table.set_column(2, "colour", pa.array(colour[: n - 40] + ["green"] * 40))
    pq.write_table(table, tmp_path / "t.parquet")
    s = build.table(
        tmp_path / "t.parquet", tmp_path / "out", time_col="when", winsorize=None, scale="none"
    )
    assert s["columns"] == ["v", "colour=blue", "colour=red"]
    x = read_all(tmp_path / "out" / "test", "x")
    assert (x[:, 1:] == 0).all()  # green: neither blue nor red
    assert x[:, 0].min() > read_all(tmp_path / "out" / "train", "x")[:, 0].max()  # time order


def test_thread_count_and_unit_size_do_not_change_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw: dict[str, Any] = {"target": "price", "drop": ["id"], "shard_bytes": 3000}
    build.table(HOUSES, tmp_path / "a", **kw)
    monkeypatch.setattr(build_table, "TABLE_UNIT_ROWS", 37)
    with LocalEngine(threads=2) as engine:
        s = build.table(HOUSES, tmp_path / "b", engine=engine, **kw)
    assert same_tree(tmp_path / "a", tmp_path / "b") == []
    assert len(ShardSet(tmp_path / "b" / "train").shards) > 5 and s["engine"] == "local"


def test_progress_reports_every_row_written_per_split(tmp_path: Path) -> None:
    seen: dict[str, list[tuple[int, int | None]]] = {}
    s = build.table(
        HOUSES,
        tmp_path / "out",
        target="price",
        drop=["id"],
        on_progress=lambda stage, n, total: seen.setdefault(stage, []).append((n, total)),
    )
    assert sorted(seen) == [
        "fit on train",
        "fit on train: impute (KNN)",
        "write test",
        "write train",
        "write val",
    ]
    train_rows = s["split"]["counts"]["train"]  # before sparse rows are dropped
    assert seen["fit on train"] == [(0, train_rows), (train_rows, train_rows)]  # open, then done
    # the KNN imputation of the train rows, inside the fit: its receivers as they finish
    knn = seen["fit on train: impute (KNN)"]
    receivers = knn[0][1]
    assert knn[0] == (0, receivers) and knn[-1] == (receivers, receivers)
    assert 0 < receivers <= train_rows
    for name in ("train", "val", "test"):
        calls = seen[f"write {name}"]
        assert calls[0][0] == 0 and sum(n for n, _ in calls) == s["counts"][name]


@pytest.mark.parametrize(
    ("csv", "kwargs", "error", "needle"),
    [
        ("a,b\n1,2\n3,x\n4,5\n6,7\n", {}, InputDataError, "column 'b' holds numbers but row 1"),
        ("a,b\n1,2\n3,4\n", {"target": "c"}, InputDataError, "target column 'c' is not in"),
        ("a,b\n1,x\n3,y\n", {"target": "b"}, InputDataError, "must be numeric"),
        ("a,b\n1,2\n3,\n5,6\n", {"target": "b"}, InputDataError, "first at row 1"),
        ("a,b\n1,\n3,\n", {}, InputDataError, "column 'b' has no value at all"),
        ("a,b\n1,2\n", {"drop": ["zz"]}, InputDataError, "--drop 'zz': no such column"),
        ("a\n1\n2\n3\n", {"drop": ["a"]}, InputDataError, "no feature column left"),
        ("a,b\n1,2\n3,4\n", {"impute": "zero"}, ConfigError, "--impute must be"),
        ("a,b\n1,2\n3,4\n", {"scale": "robust"}, ConfigError, "--scale must be"),
        ("a,b\n1,2\n3,4\n", {"max_missing": 2.0}, ConfigError, "--max-missing must be in"),
        ("a,b\n1,2\n3,4\n5,6\n", {}, InputDataError, "at least 5 are needed"),
        ("", {}, InputDataError, "is empty"),
    ],
)
def test_bad_tables_name_the_column_row_or_option(
    tmp_path: Path, csv: str, kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(csv)
    with pytest.raises(error, match=needle.replace("(", r"\(").replace("[", r"\[")):
        build.table(path, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()


def test_bad_paths_and_column_kinds(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="does not exist"):
        build.table(tmp_path / "missing.csv", tmp_path / "out")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(InputDataError, match="neither .csv nor .parquet"):
        build.table(tmp_path / "t.json", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match="holds no .csv or .parquet"):
        build.table(tmp_path / "empty", tmp_path / "out")
    days = pa.array(np.arange(20).astype("datetime64[D]"))
    pq.write_table(pa.table({"d": days, "v": np.arange(20.0)}), tmp_path / "d.parquet")
    with pytest.raises(
        InputDataError, match="column 'd' has type date|column 'd' has type timestamp"
    ):
        build.table(tmp_path / "d.parquet", tmp_path / "out")
    many = pa.table({"s": [f"v{i}" for i in range(40)], "v": np.arange(40.0)})
    pq.write_table(many, tmp_path / "s.parquet")
    with pytest.raises(InputDataError, match="40 distinct values"):
        build.table(tmp_path / "s.parquet", tmp_path / "out")
