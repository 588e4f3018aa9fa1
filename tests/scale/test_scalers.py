"""Standard and min-max scalers: sklearn's numbers, float32 kept, exact streaming."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import preprocessing
from sklearn.utils.estimator_checks import parametrize_with_checks

from datafuel.errors import (
    ConfigError,
    InputDataError,
    NonFiniteError,
    NotFittedError,
    SchemaError,
)
from datafuel.scale import MinMaxScaler, StandardScaler


def data(n: int, d: int, seed: int, missing: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 1000, size=d) + rng.normal(0, 1e4, size=d)
    X[rng.random(X.shape) < missing] = np.nan
    return X


@parametrize_with_checks([StandardScaler(), MinMaxScaler(), MinMaxScaler(feature_range=(-1, 1))])
def test_sklearn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_same_numbers_as_sklearn(seed: int, missing: float) -> None:
    X = data(500, 5, seed, missing)
    for ours, ref in (
        (StandardScaler(), preprocessing.StandardScaler()),
        (MinMaxScaler(), preprocessing.MinMaxScaler()),
    ):
        np.testing.assert_allclose(
            ours.fit_transform(X), ref.fit_transform(X), rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cls", [StandardScaler, MinMaxScaler])
def test_partial_fit_equals_fit(seed: int, cls: type) -> None:
    X = data(1000, 4, seed, 0.05)
    whole = cls().fit(X)
    streamed = cls()
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=9, replace=False))
    for chunk in np.split(X, cuts):
        streamed.partial_fit(chunk)
    for name in cls._fitted_attrs:
        np.testing.assert_allclose(getattr(streamed, name), getattr(whole, name), rtol=1e-12)
    np.testing.assert_allclose(streamed.transform(X), whole.transform(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [StandardScaler, MinMaxScaler])
def test_float32_in_float32_out_and_round_trip(cls: type) -> None:
    X = data(300, 3, 4).astype(np.float32)
    s = cls().fit(X)
    out = s.transform(X)
    assert out.dtype == np.float32
    back = s.inverse_transform(out)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, X, rtol=1e-5, atol=1e-3)
    X64 = X.astype(np.float64)
    np.testing.assert_allclose(cls().fit(X64).inverse_transform(cls().fit(X64).transform(X64)), X64)


@pytest.mark.parametrize("cls", [StandardScaler, MinMaxScaler])
def test_constant_column_does_not_divide_by_zero(cls: type) -> None:
    X = np.c_[np.full(50, 7.5), np.arange(50.0)]
    out = cls().fit_transform(X)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], np.full(50, out[0, 0]))


def test_bad_inputs() -> None:
    X = data(20, 2, 0)
    with pytest.raises(NotFittedError):
        StandardScaler().transform(X)
    Y = X.copy()
    Y[3, 1] = np.inf
    with pytest.raises(NonFiniteError, match="infinity"):
        StandardScaler().fit(Y)
    Y[:, 1] = np.nan
    with pytest.raises(InputDataError, match="no value"):
        MinMaxScaler().fit(Y)
    with pytest.raises(ConfigError, match="feature_range"):
        MinMaxScaler(feature_range=(1, 0)).fit(X)
    s = StandardScaler().fit(X)
    with pytest.raises(ValueError, match="expecting 2 features"):
        s.transform(np.zeros((3, 5)))


@pytest.mark.parametrize("cls", [StandardScaler, MinMaxScaler])
def test_state_round_trip_and_strict_from_state(cls: type) -> None:
    X = data(50, 3, 5, 0.1)
    s = cls().fit(X)
    back = cls.from_state(s.get_state())
    np.testing.assert_array_equal(back.transform(X), s.transform(X))
    state = s.get_state()
    state["fitted"]["scale_"]["data"][0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"here: fitted\.scale_\[0\] must be finite"):
        cls.from_state(state, where="here: ")
    state = s.get_state()
    state["params"]["surplus"] = 1
    with pytest.raises(SchemaError, match="unknown key 'surplus'"):
        cls.from_state(state)
