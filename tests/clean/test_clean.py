"""Mean/median imputation, winsorization, infinity scrubbing and sparse-row dropping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import mstats
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from datafuel.clean import DropSparseRows, KNNImputer, ScrubInfinite, SimpleImputer, Winsorizer
from datafuel.errors import ConfigError, InputDataError, NotFittedError, SchemaError
from datafuel.scale import StandardScaler


def data(n: int, d: int, missing: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(3, 1, size=(n, d))
    X[rng.random(X.shape) < missing] = np.nan
    return X


@parametrize_with_checks(
    [
        SimpleImputer(),
        SimpleImputer(strategy="median"),
        KNNImputer(n_neighbors=3),
        Winsorizer(),
        ScrubInfinite(),
    ]
)
def test_sklearn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("strategy", ["mean", "median"])
def test_simple_imputer_statistics(seed: int, strategy: str) -> None:
    X = data(200, 4, 0.2, seed)
    imp = SimpleImputer(strategy=strategy).fit(X)
    expected = np.nanmean(X, axis=0) if strategy == "mean" else np.nanmedian(X, axis=0)
    np.testing.assert_allclose(imp.statistics_, expected, rtol=1e-12)
    out = imp.transform(X)
    miss = np.isnan(X)
    np.testing.assert_array_equal(out[~miss], X[~miss])
    np.testing.assert_allclose(out[miss], np.broadcast_to(expected, X.shape)[miss])


def test_simple_imputer_mean_streams() -> None:
    X = data(300, 3, 0.2, 3)
    whole = SimpleImputer().fit(X)
    streamed = SimpleImputer()
    for chunk in np.array_split(X, 7):
        streamed.partial_fit(chunk)
    np.testing.assert_allclose(streamed.statistics_, whole.statistics_, rtol=1e-13)
    np.testing.assert_array_equal(streamed.n_samples_seen_, (~np.isnan(X)).sum(axis=0))
    assert not hasattr(SimpleImputer(strategy="median"), "partial_fit")


def test_simple_imputer_bad_input() -> None:
    X = data(20, 2, 0.0, 0)
    X[:, 1] = np.nan
    with pytest.raises(InputDataError, match="no value"):
        SimpleImputer().fit(X)
    with pytest.raises(ConfigError, match="strategy"):
        SimpleImputer(strategy="mode").fit(data(20, 2, 0.0, 0))
    with pytest.raises(NotFittedError):
        SimpleImputer().transform(X)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("lower", "upper"), [(0.01, 0.99), (0.05, 0.9), (0.0, 0.95)])
def test_winsorizer_matches_scipy(seed: int, lower: float, upper: float) -> None:
    X = data(537, 3, 0.0, seed)
    ours = Winsorizer(lower=lower, upper=upper).fit_transform(X)
    for j in range(X.shape[1]):
        ref = np.asarray(mstats.winsorize(X[:, j], limits=(lower, 1 - upper)))
        np.testing.assert_array_equal(ours[:, j], ref)


def test_winsorizer_is_nan_safe_and_clips_the_absurd_price() -> None:
    rng = np.random.default_rng(0)
    price = rng.normal(500_000, 100_000, size=1000)
    price[17] = 999_000_000.0
    with_nan = np.r_[price, [np.nan] * 300][:, None]
    w = Winsorizer().fit(with_nan)
    # NaNs are neither counted nor moved: caps equal those of the non-missing values
    ref = Winsorizer().fit(price[:, None])
    np.testing.assert_array_equal(w.upper_caps_, ref.upper_caps_)
    out = w.transform(with_nan)
    assert np.isnan(out[1000:]).all()
    assert out[17, 0] == w.upper_caps_[0] < 1_000_000
    # caps come from fit only: a bigger value later is clipped to the same cap
    assert w.transform(np.array([[5e9]]))[0, 0] == w.upper_caps_[0]


def test_winsorizer_bad_params() -> None:
    X = data(20, 2, 0.0, 0)
    with pytest.raises(ConfigError, match="lower must be < upper"):
        Winsorizer(lower=0.6, upper=0.4).fit(X)
    with pytest.raises(ConfigError, match="upper"):
        Winsorizer(upper=1.5).fit(X)


def test_scrub_and_drop_sparse_rows() -> None:
    X = np.array([[1.0, np.inf, 3.0], [np.nan, -np.inf, 1.0], [1.0, 2.0, 3.0]])
    scrubbed = ScrubInfinite().fit_transform(X)
    assert np.isnan(scrubbed[0, 1]) and np.isnan(scrubbed[1, 1])
    drop = DropSparseRows(max_missing_ratio=0.5).fit(X)
    np.testing.assert_array_equal(drop.keep_mask(X), [True, False, True])
    assert drop.transform(X).shape == (2, 3)
    assert DropSparseRows(max_missing_ratio=1.0).fit(X).transform(X).shape == (3, 3)
    with pytest.raises(ConfigError, match="max_missing_ratio"):
        DropSparseRows(max_missing_ratio=2).fit(X)
    with pytest.raises(SchemaError):
        drop.transform(np.zeros((2, 2)))


def test_pipeline_pandas_output_and_arrow_input() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(data(200, 3, 0.1, 4), columns=["sqft", "beds", "year"])
    y = rng.normal(size=200)
    pipe = Pipeline(
        [("knn", KNNImputer(n_neighbors=3)), ("clip", Winsorizer()), ("std", StandardScaler())]
    )
    pipe.set_output(transform="pandas")
    out = pipe.fit_transform(X)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["sqft", "beds", "year"]
    assert not out.isna().any().any()
    model = Pipeline([("imp", SimpleImputer()), ("lr", LinearRegression())]).fit(X, y)
    assert model.predict(X).shape == (200,)
    # Arrow tables work too, nulls counting as missing; names are kept
    table = pa.Table.from_pandas(X, preserve_index=False)
    imp = SimpleImputer().fit(table)
    assert list(imp.feature_names_in_) == ["sqft", "beds", "year"]
    np.testing.assert_allclose(imp.statistics_, np.nanmean(X.to_numpy(), axis=0))
    with pytest.raises(InputDataError, match="'city'"):
        SimpleImputer().fit(pa.table({"city": ["a", "b"]}))
