"""Category codes, missing-value indicators and datetime expansion (the column transformers)."""

from __future__ import annotations

import json
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.impute import MissingIndicator as SkMissingIndicator
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from datafuel.clean import CategoryEncoder, DateExpander, MissingIndicator, SimpleImputer
from datafuel.errors import ConfigError, InputDataError, NotFittedError, SchemaError


def roundtrip(est: object) -> object:
    state = json.loads(json.dumps(est.get_state()))  # type: ignore[attr-defined]
    return type(est).from_state(state)  # type: ignore[attr-defined]


@parametrize_with_checks([CategoryEncoder(), MissingIndicator(), MissingIndicator(features="all")])
def test_sklearn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


# -- CategoryEncoder -----------------------------------------------------------------
def test_codes_come_from_train_and_unknown_or_missing_is_zero() -> None:
    train = pa.table({"color": ["red", "blue", None, "red"], "size": ["s", "m", "l", "m"]})
    enc = CategoryEncoder().fit(train)
    assert [list(v) for v in enc.vocabularies_] == [["blue", "red"], ["l", "m", "s"]]
    np.testing.assert_array_equal(enc.cardinalities_, [3, 4])
    test = pa.table({"color": ["blue", "green", None], "size": ["xl", "s", "m"]})
    codes = enc.transform(test)
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, [[1, 0], [0, 3], [0, 2]])
    assert list(enc.get_feature_names_out()) == ["color", "size"]


def test_codes_min_frequency_and_state_roundtrip() -> None:
    X = np.array([["a"], ["a"], ["b"], ["c"], ["c"]], dtype=object)
    enc = CategoryEncoder(min_frequency=2).fit(X)
    assert list(enc.vocabularies_[0]) == ["a", "c"]
    back = roundtrip(enc)
    assert isinstance(back, CategoryEncoder)
    np.testing.assert_array_equal(back.transform(X), enc.transform(X))
    np.testing.assert_array_equal(back.transform(X).ravel(), [1, 1, 0, 2, 2])


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda s: s["fitted"].__setitem__("vocabularies_", [["b", "a"]]), SchemaError),
        (lambda s: s["fitted"].__setitem__("vocabularies_", [["a", "a"]]), SchemaError),
        (lambda s: s["fitted"].__setitem__("vocabularies_", [[1]]), SchemaError),
        (lambda s: s["fitted"].__setitem__("vocabularies_", []), SchemaError),
        (lambda s: s["fitted"]["cardinalities_"].__setitem__("data", [7]), SchemaError),
        (lambda s: s["fitted"].pop("cardinalities_"), SchemaError),
        (lambda s: s["fitted"].__setitem__("extra_", 1), SchemaError),
        (lambda s: s["params"].__setitem__("min_frequency", 0), ConfigError),
    ],
)
def test_codes_load_is_strict(change, error) -> None:  # type: ignore[no-untyped-def]
    enc = CategoryEncoder().fit(np.array([["a"], ["b"]], dtype=object))
    state = json.loads(json.dumps(enc.get_state()))
    change(state)
    with pytest.raises(error):
        CategoryEncoder.from_state(state)


def test_codes_refuse_unfitted_and_wrong_width() -> None:
    with pytest.raises(NotFittedError):
        CategoryEncoder().transform(np.array([["a"]], dtype=object))
    enc = CategoryEncoder().fit(np.array([["a", "b"]], dtype=object))
    with pytest.raises(SchemaError, match="2 features"):
        enc.transform(np.array([["a"]], dtype=object))
    with pytest.raises(ConfigError, match="min_frequency"):
        CategoryEncoder(min_frequency=-1).fit(np.array([["a"]], dtype=object))


# -- MissingIndicator ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_indicators_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 2] = np.where(np.isnan(X[:, 2]), 0.0, X[:, 2])  # never missing in train
    mine = MissingIndicator().fit(X)
    theirs = SkMissingIndicator(error_on_new=False).fit(X)
    np.testing.assert_array_equal(mine.features_, theirs.features_)
    Xt = rng.normal(size=(20, 4))
    Xt[rng.random(Xt.shape) < 0.3] = np.nan
    out = mine.transform(Xt)
    assert out.dtype == np.float64 and out.shape == (20, len(theirs.features_))
    np.testing.assert_array_equal(out, theirs.transform(Xt).astype(np.float64))


def test_indicators_names_infinity_state_and_pipeline() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [1.0, 2.0, np.inf]})
    ind = MissingIndicator().fit(frame)
    np.testing.assert_array_equal(ind.n_missing_, [1, 1])  # an infinity counts as missing
    assert list(ind.get_feature_names_out()) == ["missingindicator_a", "missingindicator_b"]
    back = roundtrip(ind)
    np.testing.assert_array_equal(back.transform(frame), ind.transform(frame))  # type: ignore[attr-defined]
    state = json.loads(json.dumps(ind.get_state()))
    state["fitted"]["n_missing_"]["data"] = [-1, 0]
    with pytest.raises(SchemaError, match="n_missing_"):
        MissingIndicator.from_state(state)
    with pytest.raises(ConfigError, match="features"):
        MissingIndicator(features="some").fit(frame)
    pipe = Pipeline([("ind", MissingIndicator(features="all"))]).fit(frame)
    assert pipe.transform(frame).shape == (3, 2)


# -- DateExpander ----------------------------------------------------------------------
def test_dates_expand_to_parts_with_a_train_origin() -> None:
    train = pa.table(
        {
            "sold": pa.array(
                [datetime(2024, 2, 29, 12), None, datetime(2023, 12, 31)], pa.timestamp("s")
            ),
            "built": pa.array([date(2000, 1, 1)] * 3, pa.date32()),
        }
    )
    exp = DateExpander().fit(train)
    assert list(exp.get_feature_names_out()) == [
        f"{c}_{p}"
        for c in ("sold", "built")
        for p in ("year", "month", "day", "dayofweek", "elapsed")
    ]
    out = exp.transform(train)
    np.testing.assert_array_equal(out[0, :4], [2024, 2, 29, 3])  # a Thursday
    assert out[0, 4] == pytest.approx(60.5)  # days since the train minimum, 2023-12-31
    assert np.isnan(out[1, :5]).all()  # missing: NaN for the imputer
    np.testing.assert_array_equal(out[2, :5], [2023, 12, 31, 6, 0])
    np.testing.assert_array_equal(out[:, 5:9], [[2000, 1, 1, 5]] * 3)
    later = pa.table(
        {
            "sold": pa.array([datetime(2025, 1, 1)], pa.timestamp("s")),
            "built": pa.array([date(2000, 1, 2)], pa.date32()),
        }
    )
    assert exp.transform(later)[0, 9] == 1.0  # origin fitted on train, not on this data
    seconds = DateExpander(unit="seconds").fit(train)
    assert seconds.transform(train)[0, 4] == pytest.approx(60.5 * 86400)


def test_dates_state_and_refusals() -> None:
    X = np.array([["2024-03-01"], ["2024-03-04"]], dtype="datetime64[D]")
    exp = DateExpander().fit(X)
    np.testing.assert_array_equal(roundtrip(exp).transform(X), exp.transform(X))  # type: ignore[attr-defined]
    state = json.loads(json.dumps(exp.get_state()))
    state["fitted"]["origin_"]["data"] = [float("nan")]
    with pytest.raises(InputDataError):  # NonFiniteError is an InputDataError
        DateExpander.from_state(state)
    with pytest.raises(ConfigError, match="unit"):
        DateExpander(unit="hours").fit(X)
    with pytest.raises(InputDataError, match="no value"):
        DateExpander().fit(np.array([["NaT"]], dtype="datetime64[D]"))
    with pytest.raises(InputDataError, match="not a timestamp"):
        DateExpander().fit(pa.table({"a": ["2024-01-01"]}))
    with pytest.raises(SchemaError, match="1 features"):
        exp.transform(np.array([["2024-03-01", "2024-03-01"]], dtype="datetime64[D]"))
    with pytest.raises(NotFittedError):
        DateExpander().transform(X)


def test_dates_timezones_are_utc_and_pandas_works() -> None:
    aware = pa.table({"t": pa.array([datetime(2024, 1, 1, 23, 30)], pa.timestamp("s", tz="UTC"))})
    exp = DateExpander().fit(aware)
    np.testing.assert_array_equal(exp.transform(aware)[0, :3], [2024, 1, 1])
    frame = pd.DataFrame({"t": pd.to_datetime(["2024-01-01 23:30:00"])})
    np.testing.assert_array_equal(exp.transform(frame), exp.transform(aware))


def test_imputer_after_dates_in_a_pipeline() -> None:
    X = np.array([["2024-03-01"], ["NaT"], ["2024-03-03"]], dtype="datetime64[D]")
    out = Pipeline([("d", DateExpander()), ("i", SimpleImputer())]).fit_transform(X)
    assert not np.isnan(out).any() and out.shape == (3, 5)
