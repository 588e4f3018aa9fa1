"""Table splits: random, key hash, group-aware, time-ordered; split_indices unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import datafuel
from datafuel.errors import ConfigError, InputDataError
from datafuel.split import SPLIT_NAMES, check_fractions, split, split_indices, split_tag


def table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(n),
            "user": rng.integers(0, n // 5 + 1, size=n),
            "t": rng.permutation(n).astype(np.float64),
            "x": rng.normal(size=n),
        }
    )


def test_split_indices_contract_is_unchanged() -> None:
    parts, record = split_indices(10, (0.8, 0.1, 0.1), seed=0)
    assert [len(parts[k]) for k in SPLIT_NAMES] == [8, 1, 1]
    assert record["method"] == "random" and record["total"] == 10
    assert check_fractions([0.98, 0.01, 0.01]) == (0.98, 0.01, 0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.98, 0.01, 0.01), (0.5, 0.5, 0.0)])
def test_random_split_partitions_rows(seed: int, fractions: tuple[float, float, float]) -> None:
    t = table(1000, seed)
    parts = datafuel.split(t, fractions, seed=seed)  # the module is callable
    idx = np.concatenate([parts.indices[k] for k in SPLIT_NAMES])
    assert sorted(idx.tolist()) == list(range(1000))
    for name, part in parts.items():
        assert part.num_rows == len(parts.indices[name]) == parts.record["counts"][name]
        assert split_tag(part) == name
        np.testing.assert_array_equal(part.column("id").to_numpy(), parts.indices[name])
    assert abs(parts.train.num_rows - 1000 * fractions[0]) <= 1
    json.dumps(parts.record)  # split.json material
    again = split(t, fractions, seed=seed)
    assert all(np.array_equal(again.indices[k], parts.indices[k]) for k in SPLIT_NAMES)


def test_hash_split_keeps_rows_in_place_when_data_grows() -> None:
    small, big = table(500), table(2000)  # big's first 500 ids are small's ids
    a = split(small, seed=3, key="id")
    b = split(big, seed=3, key="id")
    for name in SPLIT_NAMES:
        ids_a = set(a[name].column("id").to_pylist())
        ids_b = set(b[name].column("id").to_pylist())
        assert ids_a <= ids_b
    assert 0.75 < b.train.num_rows / 2000 < 0.85
    assert b.record["method"] == "hash" and b.record["column"] == "id"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_never_shares_a_group(seed: int) -> None:
    t = table(1000, seed)
    parts = split(t, seed=seed, by="user")
    groups = [set(parts[k].column("user").to_pylist()) for k in SPLIT_NAMES]
    assert (
        not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    )
    assert all(parts[k].num_rows > 0 for k in SPLIT_NAMES)
    assert abs(parts.train.num_rows / 1000 - 0.8) < 0.05
    assert sum(parts.record["groups"].values()) == len(set(t.column("user").to_pylist()))


def test_time_split_is_ordered() -> None:
    parts = split(table(1000), time="t")
    train_t, val_t, test_t = (parts[k].column("t").to_numpy() for k in SPLIT_NAMES)
    assert train_t.max() < val_t.min() and val_t.max() < test_t.min()
    assert [parts[k].num_rows for k in SPLIT_NAMES] == [800, 100, 100]


def test_pandas_in_pandas_out() -> None:
    df = table(100).to_pandas()
    parts = split(df, by="user")
    assert isinstance(parts.test, pd.DataFrame)
    assert split_tag(parts.test) == "test" and split_tag(df) is None


def test_bad_inputs() -> None:
    t = table(50)
    with pytest.raises(InputDataError, match="'team'"):
        split(t, by="team")
    with pytest.raises(ConfigError, match="sum to 1"):
        split(t, (0.8, 0.1, 0.2))
    with pytest.raises(ConfigError, match="at most one"):
        split(t, by="user", time="t")
    with pytest.raises(InputDataError, match="empty"):
        split(t.slice(0, 0))
    with pytest.raises(InputDataError, match="row 1"):
        split(pa.table({"t": [1.0, None, 3.0]}), time="t")
    with pytest.raises(ConfigError, match="pyarrow Table or a pandas"):
        split(np.zeros((3, 2)))


def test_hash_split_uses_the_shared_stable_hash() -> None:
    from datafuel._hash import HASH_DESCRIPTION, stable_fraction

    t = table(200)
    parts = split(t, seed=7, key="id")
    assert parts.record["hash"] == HASH_DESCRIPTION
    cum = np.cumsum((0.8, 0.1, 0.1))[:2]
    for name_index, name in enumerate(SPLIT_NAMES):
        for i in parts[name].column("id").to_pylist():
            assert np.searchsorted(cum, stable_fraction(str(i).encode(), 7), side="right") == (
                name_index
            )


@pytest.mark.parametrize("seed", [12345678901234567, 9_223_372_036_854_775_807, -(2**63)])
def test_hash_split_takes_any_int64_seed(seed: int) -> None:
    # the old salt=str(seed) form failed beyond 16 digits; the hash is keyed by an int64
    parts = split(table(100), seed=seed, key="id")
    assert sum(parts.record["counts"].values()) == 100 and parts.record["seed"] == seed
    again = split(table(100), seed=seed, key="id")
    assert all(np.array_equal(again.indices[k], parts.indices[k]) for k in SPLIT_NAMES)


def test_hash_split_refuses_a_seed_beyond_int64() -> None:
    with pytest.raises(
        ConfigError, match=r"seed must be an int in the range .* Got 10000000000000000000"
    ):
        split(table(10), seed=10**19, key="id")  # 20 digits
