"""KNNImputer gives sklearn's answer (same donors, weights, fallbacks), from train donors only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.impute import KNNImputer as SkKNNImputer

from datafuel.clean import KNNImputer
from datafuel.errors import ConfigError, InputDataError, NotFittedError, SchemaError


def data(n: int, d: int, missing: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, size=d) + rng.normal(0, 50, size=d)
    X[rng.random(X.shape) < missing] = np.nan
    return X


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 5, 12])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_matches_sklearn_fit_transform(seed: int, k: int, weights: str) -> None:
    X = data(400, 7, 0.15, seed)
    ours = KNNImputer(n_neighbors=k, weights=weights).fit_transform(X)
    ref = SkKNNImputer(n_neighbors=k, weights=weights).fit_transform(X)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)
    assert not np.isnan(ours).any()


@pytest.mark.parametrize("seed", [3, 4])
def test_matches_sklearn_on_unseen_rows_with_train_donors_only(seed: int) -> None:
    train, test = data(500, 6, 0.1, seed), data(120, 6, 0.3, seed + 100)
    ours = KNNImputer(n_neighbors=4).fit(train)
    ref = SkKNNImputer(n_neighbors=4).fit(train)
    np.testing.assert_allclose(ours.transform(test), ref.transform(test), rtol=1e-7)
    # the donors are the training rows, untouched by transforming other data
    np.testing.assert_array_equal(ours.fit_X_, train)


@pytest.mark.parametrize("seed", [0, 1])
def test_heavy_missingness_uses_column_mean_like_sklearn(seed: int) -> None:
    # with half the values gone in 3 columns, some receivers share no coordinate with
    # any donor of a column: sklearn (and we) fall back to the column's training mean
    X = data(150, 3, 0.5, seed)
    X = X[~np.isnan(X).all(axis=1)]
    for weights in ("uniform", "distance"):
        ours = KNNImputer(n_neighbors=5, weights=weights).fit_transform(X)
        ref = SkKNNImputer(n_neighbors=5, weights=weights).fit_transform(X)
        np.testing.assert_allclose(ours, ref, rtol=1e-7)


def test_fewer_donors_than_k_like_sklearn() -> None:
    X = np.array([[1.0, np.nan], [2.0, 4.0], [np.nan, 5.0], [8.0, 1.0]])
    np.testing.assert_allclose(
        KNNImputer(n_neighbors=10).fit_transform(X),
        SkKNNImputer(n_neighbors=10).fit_transform(X),
    )


def test_block_sizes_do_not_change_the_answer() -> None:
    X = data(300, 5, 0.2, 7)
    ref = KNNImputer(n_neighbors=3).fit_transform(X)
    small = KNNImputer(n_neighbors=3, block_size=7, donor_block=11).fit_transform(X)
    np.testing.assert_array_equal(small, ref)


def brute_force(fit: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
    """Textbook nan-euclidean KNN imputation, one entry at a time, exact float64."""
    out = X.copy()
    means = np.nanmean(fit, axis=0)
    for i, c in np.argwhere(np.isnan(X)):
        donors = np.flatnonzero(~np.isnan(fit[:, c]))
        diff = fit[donors] - X[i]
        present = ~np.isnan(diff)
        cnt = present.sum(axis=1)
        dist = np.where(present, diff * diff, 0.0).sum(axis=1) / np.maximum(cnt, 1)
        ok = cnt > 0
        donors, dist = donors[ok], dist[ok]
        nearest = donors[np.lexsort((donors, dist))[:k]]
        out[i, c] = fit[nearest, c].mean() if nearest.size else means[c]
    return out


@pytest.mark.parametrize("seed", [9, 10])
def test_outlier_donor_is_ranked_exactly(seed: int) -> None:
    # A $999,000,000-like value ruins float32 distances near it, and also sklearn's
    # float64 expansion ||x||^2 + ||y||^2 - 2xy (cancellation of ~1e18 terms picks
    # wrong donors there). The exact float64 re-rank and fallback give the textbook
    # answer, which is checked here by brute force instead of against sklearn.
    X = data(300, 4, 0.15, seed)
    X[5, 0] = 999_000_000.0
    X[6, 0] = 998_999_000.0
    X[7, 0] = np.nan
    X[7, 1:] = X[5, 1:]
    np.testing.assert_allclose(
        KNNImputer(n_neighbors=2).fit_transform(X), brute_force(X, X, 2), rtol=1e-12
    )


def test_brute_force_reference_agrees_with_sklearn_on_ordinary_data() -> None:
    X = data(200, 4, 0.2, 5)
    np.testing.assert_allclose(
        brute_force(X, X, 3), SkKNNImputer(n_neighbors=3).fit_transform(X), rtol=1e-7
    )


def test_callable_weights_like_sklearn() -> None:
    X = data(200, 4, 0.2, 11)

    def w(d: np.ndarray) -> np.ndarray:
        return np.exp(-d / 10)

    np.testing.assert_allclose(
        KNNImputer(n_neighbors=4, weights=w).fit_transform(X),
        SkKNNImputer(n_neighbors=4, weights=w).fit_transform(X),
        rtol=1e-7,
    )


def test_infinity_is_missing() -> None:
    X = data(100, 3, 0.1, 1)
    Y = X.copy()
    Y[np.isnan(Y)] = np.inf
    np.testing.assert_array_equal(KNNImputer().fit_transform(Y), KNNImputer().fit_transform(X))


def test_rows_without_missing_values_are_unchanged_and_float32_is_kept() -> None:
    X = data(100, 3, 0.1, 2).astype(np.float32)
    out = KNNImputer().fit_transform(X)
    assert out.dtype == np.float32
    full = ~np.isnan(X).any(axis=1)
    np.testing.assert_array_equal(out[full], X[full])


def test_bad_inputs() -> None:
    X = data(50, 3, 0.1, 0)
    with pytest.raises(NotFittedError):
        KNNImputer().transform(X)
    X[:, 1] = np.nan
    with pytest.raises(InputDataError, match="no value"):
        KNNImputer().fit(X)
    imp = KNNImputer().fit(data(50, 3, 0.1, 0))
    with pytest.raises(SchemaError, match="expecting 3 features"):
        imp.transform(np.zeros((2, 4)))


def test_parameter_bounds_are_the_same_for_fit_and_load() -> None:
    X = data(50, 3, 0.1, 0)
    for kwargs in ({"n_neighbors": 10**12}, {"n_neighbors": -3}, {"block_size": 2**20}):
        with pytest.raises(ConfigError):
            KNNImputer(**kwargs).fit(X)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="block_size x donor_block"):
        KNNImputer(block_size=65_536, donor_block=1_048_576).fit(X)
    KNNImputer(n_neighbors=65_536).fit(X)  # more than the donors: allowed, as in sklearn
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            KNNImputer(device="cuda").fit(X)
