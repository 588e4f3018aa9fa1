"""Exact keys of table rows and texts, union-find, the cluster record and split alignment."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from datafuel.dedup import (
    Clusters,
    check_method,
    cluster_splits,
    components,
    row_clusters,
    row_keys,
    text_clusters,
    text_key,
)
from datafuel.errors import ConfigError, InputDataError


def _table(n: int = 2000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, n),
            "c": rng.choice(["x", "y", "z"], n),
        }
    )


def test_duplicated_rows_are_found_and_rows_differing_in_one_feature_are_not() -> None:
    t = _table()
    dup = t.take(pa.array([3, 10, 10, 500]))  # row 10 twice
    one_off = t.take(pa.array([7, 8, 9])).to_pydict()
    one_off["a"][0] += 1e-9
    one_off["b"][1] += 1
    one_off["c"][2] = "w"
    full = pa.concat_tables([t, dup, pa.table(one_off, schema=t.schema)])
    c = row_clusters(full, ["a", "b", "c"])
    assert c.labels[2000:2004].tolist() == [3, 10, 10, 500]
    assert c.labels[2004:].tolist() == [2004, 2005, 2006]
    assert c.to_json()["clusters"] == 3 and c.to_json()["duplicates"] == 4
    # on key columns only, rows equal there are duplicates
    on_c = row_clusters(full, ["c"])
    assert on_c.to_json()["clusters"] == 3 and on_c.labels[2006] == 2006  # x, y, z; w alone


def test_row_keys_normalise_numbers_and_missing_values() -> None:
    t = pa.table({"x": pa.array([1.0, -0.0, None, float("nan"), 0.0, float("nan")])})
    labels = row_clusters(t, ["x"]).labels.tolist()
    assert labels == [0, 1, 2, 3, 1, 3]
    ints = pa.table({"x": pa.array([1, 2], pa.int64())})
    floats = pa.table({"x": pa.array([1.0, 2.0])})
    assert np.array_equal(row_keys(ints, ["x"]), row_keys(floats, ["x"]))
    with pytest.raises(InputDataError, match="'nope'"):
        row_keys(t, ["nope"])
    with pytest.raises(InputDataError, match="list"):
        row_keys(pa.table({"l": [[1], [2]]}), ["l"])


def test_text_keys_normalise_unicode_and_spacing_but_keep_case() -> None:
    assert text_key("Caf\u00e9  au\tlait\n") == text_key("Cafe\u0301 au lait")
    assert text_key("Cafe au lait") != text_key("cafe au lait")
    c = text_clusters(["a b", " a\u00a0b ", "A b", "a b"], "exact")
    assert c.labels.tolist() == [0, 0, 2, 0]


def test_components_match_scipy() -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(1)
    for n, e in ((50, 10), (1000, 900), (2000, 3000)):
        i, j = rng.integers(0, n, e), rng.integers(0, n, e)
        labels = components(n, i, j)
        _, ref = connected_components(
            coo_matrix((np.ones(e), (i, j)), shape=(n, n)), directed=False
        )
        # the same partition, labelled by each component's smallest member
        for comp in np.unique(ref):
            members = np.flatnonzero(ref == comp)
            assert (labels[members] == members.min()).all()


def test_cluster_splits_keep_clusters_and_groups_on_one_side() -> None:
    which = np.array([0, 2, 1, 0, 2, 0])
    labels = np.array([0, 0, 2, 3, 2, 5])  # {0, 1}, {2, 4}
    assert cluster_splits(which, labels).tolist() == [0, 0, 1, 0, 1, 0]
    # without duplicates nothing moves
    assert cluster_splits(which, np.arange(6)).tolist() == which.tolist()
    # groups {3, 4} and cluster {2, 4} join 2, 3, 4 into one: they go where 2 went
    groups = np.array(["a", "b", "c", "d", "d", "e"])
    assert cluster_splits(np.array([0, 2, 1, 0, 0, 0]), labels, groups).tolist() == [
        0,
        0,
        1,
        1,
        1,
        0,
    ]


def test_methods_are_checked() -> None:
    with pytest.raises(ConfigError, match="none, exact or near"):
        check_method("fuzzy")
    with pytest.raises(ConfigError, match="texts and images only"):
        check_method("near", "table")
    c = Clusters(np.arange(3), "none")
    assert c.to_json()["clusters"] == 0 and c.representatives().all()
