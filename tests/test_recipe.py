"""Recipe: fitted on train only (provably), JSON round trip, leakage and fit-order errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import datafuel
from datafuel.clean import DropSparseRows, KNNImputer, SimpleImputer, Winsorizer
from datafuel.errors import ConfigError, InputDataError, LeakageError, NotFittedError, SchemaError
from datafuel.scale import MinMaxScaler, StandardScaler


def houses(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {
        "sqft": rng.lognormal(7.3, 0.3, n),
        "beds": rng.integers(1, 6, n).astype(np.float64),
        "year": rng.integers(1900, 2024, n).astype(np.float64),
    }
    for v in cols.values():
        v[rng.random(n) < 0.1] = np.nan
    price = cols["sqft"] * 400 + rng.normal(0, 1e4, n)
    price = np.where(np.isnan(price), 5e5, price)
    price[3] = 999_000_000.0
    return pa.table({**cols, "price": price})


def full_recipe() -> datafuel.Recipe:
    return datafuel.Recipe(
        [DropSparseRows(0.5), KNNImputer(n_neighbors=3), Winsorizer(0.01, 0.99), StandardScaler()],
        target_steps=[Winsorizer(0.01, 0.99)],
    )


def fit_on_train(t: pa.Table, seed: int) -> tuple[datafuel.Recipe, datafuel.split.Split]:
    parts = datafuel.split(t, seed=seed)
    train = parts.train
    recipe = full_recipe().fit(train.drop_columns(["price"]), train.column("price"))
    return recipe, parts


@pytest.mark.parametrize("seed", [0, 1])
def test_statistics_in_recipe_json_are_the_train_rows_alone(tmp_path: Path, seed: int) -> None:
    parts = datafuel.split(houses(600, seed), seed=seed)
    X = parts.train.drop_columns(["price"])
    r = datafuel.Recipe([SimpleImputer(), StandardScaler()]).fit(X)
    r.save(tmp_path / "recipe.json")
    saved = json.loads((tmp_path / "recipe.json").read_text())
    train = np.column_stack([c.to_numpy(zero_copy_only=False) for c in X.columns]).astype(float)
    means = np.nanmean(train, axis=0)
    np.testing.assert_allclose(
        saved["steps"][0]["fitted"]["statistics_"]["data"], means, rtol=1e-13
    )
    filled = np.where(np.isnan(train), means, train)
    np.testing.assert_allclose(
        saved["steps"][1]["fitted"]["mean_"]["data"], filled.mean(0), rtol=1e-12
    )
    np.testing.assert_allclose(
        saved["steps"][1]["fitted"]["var_"]["data"], filled.var(0), rtol=1e-10
    )
    # and not those of all rows
    everything = np.column_stack(
        [
            c.to_numpy(zero_copy_only=False)
            for c in houses(600, seed).drop_columns(["price"]).columns
        ]
    ).astype(float)
    assert not np.allclose(np.nanmean(everything, axis=0), means)


@pytest.mark.parametrize("seed", [0, 1])
def test_changing_only_test_rows_changes_no_fitted_value(tmp_path: Path, seed: int) -> None:
    t = houses(500, seed)
    parts = datafuel.split(t, seed=seed)
    data = {c: t.column(c).to_numpy(zero_copy_only=False).copy() for c in t.column_names}
    for c in data:  # poison every test row, including the target
        data[c][parts.indices["test"]] = data[c][parts.indices["test"]] * 1000 + 7
    poisoned = pa.table(data)
    r1, _ = fit_on_train(t, seed)
    r2, p2 = fit_on_train(poisoned, seed)
    assert np.array_equal(p2.indices["test"], parts.indices["test"])
    r1.save(tmp_path / "a" / "recipe.json")
    r2.save(tmp_path / "b" / "recipe.json")
    assert (tmp_path / "a" / "recipe.json").read_bytes() == (
        tmp_path / "b" / "recipe.json"
    ).read_bytes()
    assert r1.fingerprint() == r2.fingerprint()


def test_fitting_on_val_or_test_is_leakage() -> None:
    parts = datafuel.split(houses(100, 0))
    frames = datafuel.split(houses(100, 0).to_pandas())
    for name in ("val", "test"):
        with pytest.raises(LeakageError, match=name):
            full_recipe().fit(parts[name].drop_columns(["price"]), parts[name].column("price"))
        with pytest.raises(LeakageError, match=name):
            datafuel.Recipe([StandardScaler()]).fit(frames[name].drop(columns=["price"]))
    datafuel.Recipe([StandardScaler()]).fit(frames.train.drop(columns=["price"]))
    with pytest.raises(NotFittedError):
        full_recipe().transform(parts.test.drop_columns(["price"]))


def test_save_load_round_trip(tmp_path: Path) -> None:
    recipe, parts = fit_on_train(houses(400, 2), 2)
    path = tmp_path / "out" / "recipe.json"
    fp = recipe.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "recipe.json",
        "recipe.step1.fit_X.npy",
    ]
    loaded = datafuel.Recipe.load(path)
    for name, part in parts.items():
        a = recipe.transform(part.drop_columns(["price"]), part.column("price"))
        b = loaded.transform(part.drop_columns(["price"]), part.column("price"))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.isnan(a[0]).any(), name
    assert loaded.save(tmp_path / "again" / "recipe.json") == fp
    assert loaded.fingerprint() == recipe.fingerprint()
    # the absurd price is capped by the target winsorizer
    assert recipe.target_steps[0].upper_caps_[0] < 1e7


def test_tampered_or_escaping_array_files_are_refused(tmp_path: Path) -> None:
    recipe, _ = fit_on_train(houses(200, 3), 3)
    path = tmp_path / "recipe.json"
    recipe.save(path)
    npy = tmp_path / "recipe.step1.fit_X.npy"
    arr = np.load(npy, allow_pickle=False)
    arr[0, 0] += 1
    np.save(npy, arr)
    with pytest.raises(InputDataError, match="SHA-256"):
        datafuel.Recipe.load(path)
    recipe.save(path)
    state = json.loads(path.read_text())
    state["steps"][1]["fitted"]["fit_X_"]["npy"] = "../elsewhere.npy"
    path.write_text(json.dumps(state))
    with pytest.raises(InputDataError, match="plain name"):
        datafuel.Recipe.load(path)


def test_rows_dropped_with_their_targets_and_min_max() -> None:
    X = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0], [5.0, np.nan]])
    y = np.array([10.0, 20.0, 30.0, 40.0])
    r = datafuel.Recipe([DropSparseRows(0.5), SimpleImputer(), MinMaxScaler()]).fit(X, y)
    Xt, yt, keep = r.transform_rows(X, y)
    np.testing.assert_array_equal(keep, [True, False, True, True])
    np.testing.assert_array_equal(yt, [10.0, 30.0, 40.0])
    assert Xt.shape == (3, 2) and r.fit_report_[0]["rows_dropped"] == 1


def test_bad_inputs() -> None:
    X = np.array([[1.0, np.nan], [2.0, np.nan]])
    with pytest.raises(InputDataError, match="#1"):
        datafuel.Recipe([SimpleImputer()]).fit(X)
    with pytest.raises(InputDataError, match="target"):
        datafuel.Recipe([StandardScaler()]).fit(np.ones((2, 1)), [1.0, np.nan])
    with pytest.raises(ConfigError, match="datafuel clean/scale"):
        datafuel.Recipe([object()]).fit(np.ones((2, 1)))  # type: ignore[list-item]
    r = datafuel.Recipe([StandardScaler()]).fit(pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    with pytest.raises(SchemaError, match="'b'"):
        r.transform(pa.table({"a": [1.0]}))
