"""``build.apply``: a saved table recipe turns new rows into the build's own columns."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from datafuel import build
from datafuel.errors import InputDataError, SchemaError
from datafuel.loaders import ShardSet
from datafuel.split import split

HOUSES = str(files("datafuel") / "data" / "houses.csv")


def read_all(directory: Path, name: str) -> np.ndarray:
    ds = ShardSet(directory, verify=True)
    return np.concatenate([b[name] for b in ds.iter_batches(4096)])


def held_out_rows(tmp_path: Path, seed: int = 0) -> Path:
    """A CSV copy of the houses' test split, as production data (target and id included)."""
    table = pacsv.read_csv(HOUSES)
    parts = split(table, (0.8, 0.1, 0.1), seed=seed)
    path = tmp_path / "new.csv"
    pacsv.write_csv(table.take(parts.indices["test"]), path)
    return path


def test_apply_to_the_test_rows_gives_the_builds_test_split(tmp_path: Path) -> None:
    built = tmp_path / "built"
    build.table(HOUSES, built, target="price", drop=["id"])
    s = build.apply(built / "recipe.json", held_out_rows(tmp_path), tmp_path / "scored")
    assert s["kind"] == "apply" and s["engine"] == "local"
    np.testing.assert_array_equal(read_all(tmp_path / "scored", "x"), read_all(built / "test", "x"))
    want, got = ShardSet(built / "test"), ShardSet(tmp_path / "scored")
    assert got.metadata == want.metadata
    assert set(got.fields) == {"x"} and got.fields["x"] == want.fields["x"]
    assert (
        s["counts"]["data"] + s["skipped"] == len(ShardSet(built / "test"))
        and s["columns"] == want.metadata["columns"]
    )


def test_apply_repeats_the_column_steps(tmp_path: Path) -> None:
    built = tmp_path / "built"
    build.table(
        HOUSES,
        built,
        target="price",
        drop=["id"],
        categorical="codes",
        missing_indicators=True,
        seed=2,
    )
    new = held_out_rows(tmp_path, seed=2)
    s = build.apply(built / "recipe.json", new, tmp_path / "scored", shard_bytes=2048)
    for name in ("x", "cat"):
        np.testing.assert_array_equal(
            read_all(tmp_path / "scored", name), read_all(built / "test", name)
        )
    assert ShardSet(tmp_path / "scored").metadata == ShardSet(built / "test").metadata
    assert s["columns"][-1].startswith("missingindicator_")


def test_apply_with_dates_and_an_unseen_category(tmp_path: Path) -> None:
    n = 200
    rng = np.random.default_rng(0)
    base = np.datetime64("2021-01-01T00:00:00")
    table = pa.table(
        {
            "a": rng.normal(size=n),
            "city": [f"c{v}" for v in rng.integers(0, 30, n)],
            "when": pa.array(base + rng.integers(0, 10**7, n).astype("timedelta64[s]")),
            "y": rng.normal(size=n),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    build.table(
        tmp_path / "t.parquet",
        tmp_path / "b",
        target="y",
        categorical="codes",
        expand_dates=True,
        max_missing=1.0,  # the row without a date is imputed, not dropped
    )
    new = pa.table(
        {
            "when": pa.array([base, None]).cast(pa.timestamp("s")),
            "city": ["nowhere", None],
            "a": [0.5, 1.0],
        }
    )
    pq.write_table(new, tmp_path / "new.parquet")
    s = build.apply(tmp_path / "b" / "recipe.json", tmp_path / "new.parquet", tmp_path / "s")
    assert s["counts"]["data"] == 2
    np.testing.assert_array_equal(read_all(tmp_path / "s", "cat"), [[0], [0]])
    x = read_all(tmp_path / "s", "x")
    assert x.shape == (2, 6) and np.isfinite(x).all()


def test_apply_refuses_a_missing_or_mistyped_column(tmp_path: Path) -> None:
    built = tmp_path / "built"
    build.table(HOUSES, built, target="price", drop=["id"])
    table = pacsv.read_csv(HOUSES)
    pacsv.write_csv(table.drop_columns(["sqft"]), tmp_path / "no_sqft.csv")
    with pytest.raises(InputDataError, match="no column 'sqft'") as info:
        build.apply(built / "recipe.json", tmp_path / "no_sqft.csv", tmp_path / "o1")
    assert info.value.field == "sqft"
    text = table.set_column(
        table.column_names.index("bedrooms"),
        "bedrooms",
        pa.array([f"{v} rooms" for v in table.column("bedrooms").to_pylist()]),
    )
    pacsv.write_csv(text, tmp_path / "text.csv")
    with pytest.raises(InputDataError, match="'bedrooms' has type string") as info:
        build.apply(built / "recipe.json", tmp_path / "text.csv", tmp_path / "o2")
    assert info.value.field == "bedrooms"
    nums = table.set_column(
        table.column_names.index("neighborhood"),
        "neighborhood",
        pa.array(np.arange(table.num_rows)),
    )
    pacsv.write_csv(nums, tmp_path / "nums.csv")
    with pytest.raises(InputDataError, match="'neighborhood' has type int64"):
        build.apply(built / "recipe.json", tmp_path / "nums.csv", tmp_path / "o3")


def test_apply_refuses_a_tampered_column_record(tmp_path: Path) -> None:
    built = tmp_path / "built"
    build.table(HOUSES, built, target="price", drop=["id"], categorical="codes")
    recipe = json.loads((built / "recipe.json").read_text())
    recipe["extra"]["numeric_columns"] = recipe["extra"]["numeric_columns"][::-1]
    (tmp_path / "r1.json").write_text(json.dumps(recipe))
    for npy in built.glob("*.npy"):
        (tmp_path / npy.name).write_bytes(npy.read_bytes())
    (tmp_path / "recipe.step1.fit_X.npy").write_bytes(
        (built / "recipe.step1.fit_X.npy").read_bytes()
    )
    with pytest.raises(SchemaError, match="numeric_columns"):
        build.apply(tmp_path / "r1.json", HOUSES, tmp_path / "o1")
    recipe = json.loads((built / "recipe.json").read_text())
    recipe["extra"]["column_steps"]["category_encoder"]["fitted"]["vocabularies_"] = [["b", "a"]]
    (tmp_path / "r2.json").write_text(json.dumps(recipe))
    with pytest.raises(SchemaError, match="vocabularies_"):
        build.apply(tmp_path / "r2.json", HOUSES, tmp_path / "o2")


def test_apply_keeps_the_builds_id_column_so_scores_map_back_to_rows(tmp_path: Path) -> None:
    built = tmp_path / "built"
    build.table(HOUSES, built, target="price", keep=["id"])
    new = held_out_rows(tmp_path)
    s = build.apply(built / "recipe.json", new, tmp_path / "scored")
    assert s["kept"] == ["id"]
    ids = read_all(tmp_path / "scored", "id")
    # the same rows, in the same order, as the build's test split, id for id
    np.testing.assert_array_equal(ids, read_all(built / "test", "id"))
    np.testing.assert_array_equal(read_all(tmp_path / "scored", "x"), read_all(built / "test", "x"))
    source = pacsv.read_csv(new)
    kept_rows = np.isin(source.column("id").to_numpy(), ids)
    assert kept_rows.sum() == len(ids) == s["counts"]["data"]
    fields = ShardSet(tmp_path / "scored").fields
    test_fields = ShardSet(built / "test").fields
    assert set(fields) == {"x", "id"} and fields["id"] == test_fields["id"]
    # production data without the id: refused, naming it, unless told to keep nothing
    pacsv.write_csv(source.drop_columns(["id"]), tmp_path / "noid.csv")
    with pytest.raises(InputDataError, match=r"no column 'id', which the build kept"):
        build.apply(built / "recipe.json", tmp_path / "noid.csv", tmp_path / "s2")
    s3 = build.apply(built / "recipe.json", tmp_path / "noid.csv", tmp_path / "s3", keep=[])
    assert s3["kept"] == [] and set(ShardSet(tmp_path / "s3").fields) == {"x"}
    # an explicit keep of another column (the target, here only an ordinary column)
    s4 = build.apply(built / "recipe.json", new, tmp_path / "s4", keep=["price"])
    assert s4["kept"] == ["price"]
    np.testing.assert_array_equal(
        read_all(tmp_path / "s4", "price"),
        source.column("price").to_numpy()[np.isin(source.column("id").to_numpy(), ids)],
    )
