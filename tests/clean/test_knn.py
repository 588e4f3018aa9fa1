"""KNNImputer gives sklearn's answer (same donors, weights, fallbacks), from train donors only."""

from __future__ import annotations

from typing import Any

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


# -- real tables and degenerate shapes ---------------------------------------------------
# None of sklearn's bundled tables has missing values, and no package here ships a table
# with real NaNs offline (seaborn and statsmodels are not installed; fetch_* downloads),
# so values are removed at random (MCAR) at a few rates.


def real_table(name: str) -> np.ndarray:
    from sklearn import datasets

    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
        "wine": datasets.load_wine,
    }[name]
    return np.asarray(loader().data, dtype=np.float64)


def shaped(X: np.ndarray, shape: str, missing: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if shape == "standardised":
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    elif shape == "dup25":  # every row 25 times: ties at distance 0 everywhere
        X = np.tile(X[:60], (25, 1))
    X = X.copy()
    X[rng.random(X.shape) < missing] = np.nan
    return X[~np.isnan(X).all(axis=1)]


def tie_aware_check(fit: np.ndarray, X: np.ndarray, out: np.ndarray, ref: np.ndarray, k: int):
    """``out`` is the exact reference (ties to the lower donor index); ``ref`` (sklearn)
    equals it wherever the donors are determined, and elsewhere is one of the valid
    resolutions of the tie at the k-th distance.

    sklearn takes ``np.argpartition(dist, k - 1)[:, :k]``: among donors at exactly the
    k-th distance, which ones it takes is up to numpy's introselect (SIMD on AVX-512),
    not the lower index (``np.argpartition([1., 0, 0, 0, 0, 0], 4)[:5]`` is not
    ``[1, 2, 3, 4, 5]``), and its float64 expansion ``|x|^2 - 2xy + |y|^2`` rounds
    exact ties apart. So its choice among ties is not a rule to copy; ours is.
    """
    np.testing.assert_allclose(out, brute_force(fit, X, k), rtol=1e-12, atol=1e-12)
    # sklearn's rounding of |x|^2 - 2xy + |y|^2: absolute, of the raw squared norms
    scale = max(np.nanmax(np.nansum(fit * fit, axis=1)), np.nanmax(np.nansum(X * X, axis=1)))
    undetermined = 0
    for i, c in np.argwhere(np.isnan(X)):
        donors = np.flatnonzero(~np.isnan(fit[:, c]))
        diff = fit[donors] - X[i]
        present = ~np.isnan(diff)
        cnt = present.sum(axis=1)
        ok = cnt > 0
        if not ok.any():
            assert ref[i, c] == pytest.approx(out[i, c])
            continue
        dist = np.where(present, diff * diff, 0.0).sum(axis=1)[ok] / cnt[ok]
        vals = fit[donors[ok], c]
        kk = min(k, dist.size)
        dk = np.sort(dist)[kk - 1]
        band = 1e-9 * dk + 1e-12 * scale
        inside, tied = dist < dk - band, np.abs(dist - dk) <= band
        m = kk - int(inside.sum())
        tv = np.sort(vals[tied])
        if tv.size == m or tv[0] == tv[-1]:
            np.testing.assert_allclose(ref[i, c], out[i, c], rtol=1e-7, atol=1e-9)
            continue
        undetermined += 1
        low = (vals[inside].sum() + tv[:m].sum()) / kk
        high = (vals[inside].sum() + tv[-m:].sum()) / kk
        assert low - 1e-9 <= ref[i, c] <= high + 1e-9
    return undetermined


@pytest.mark.parametrize("name", ["breast_cancer", "diabetes", "wine"])
@pytest.mark.parametrize("shape", ["raw", "standardised", "dup25"])
@pytest.mark.parametrize("missing", [0.02, 0.1, 0.5])
def test_real_tables_match_sklearn(name: str, shape: str, missing: float) -> None:
    X = shaped(real_table(name), shape, missing, seed=0)
    ours = KNNImputer(n_neighbors=5).fit_transform(X)
    ref = SkKNNImputer(n_neighbors=5).fit_transform(X)
    tie_aware_check(X, X, ours, ref, 5)
    if shape != "dup25" and missing <= 0.1:  # no exact ties there: identical donors
        np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_raw_features_from_1e_minus_3_to_1e4_match_sklearn(weights: str) -> None:
    # breast cancer raw spans 8e-4 (fractal dimension SE) to 4.3e3 (worst area): the
    # cancellation that made float32 screening fall back for most receivers
    X = shaped(real_table("breast_cancer"), "raw", 0.1, seed=1)
    assert np.nanmin(np.abs(X[X != 0])) < 1e-3 and np.nanmax(X) > 4e3
    ours = KNNImputer(n_neighbors=3, weights=weights).fit_transform(X)
    ref = SkKNNImputer(n_neighbors=3, weights=weights).fit_transform(X)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)


def test_ties_go_to_the_lower_donor_index_and_sklearn_picks_one_of_them() -> None:
    # receiver [nan, 0]: donors 0..5 all at distance 0 in column 1, values 0..5
    fit = np.array([[float(v), 0.0] for v in range(6)] + [[100.0, 9.0]])
    X = np.array([[np.nan, 0.0]])
    ours = KNNImputer(n_neighbors=2).fit(fit).transform(X)
    assert ours[0, 0] == 0.5  # donors 0 and 1
    ref = SkKNNImputer(n_neighbors=2).fit(fit).transform(X)
    assert tie_aware_check(fit, X, ours, ref, 2) == 1  # sklearn's pick is its own


@pytest.mark.parametrize("copies", [25, 60])
def test_more_exact_ties_than_candidates(copies: int) -> None:
    # each row `copies` times: more donors at distance 0 than the first pass keeps
    X = shaped(real_table("wine")[:20], "raw", 0.0, 0)
    X = np.tile(X, (copies, 1))
    rng = np.random.default_rng(3)
    X[rng.random(X.shape) < 0.3] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    ours = KNNImputer(n_neighbors=4).fit_transform(X)
    tie_aware_check(X, X, ours, SkKNNImputer(n_neighbors=4).fit_transform(X), 4)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("k", [1, 5, 50])
def test_tiny_n_and_k_above_the_donor_count(n: int, k: int) -> None:
    X = shaped(real_table("diabetes")[:n], "raw", 0.3, seed=n)
    empty = ~(~np.isnan(X)).any(axis=0)
    if empty.any():  # a column with no value at all is refused by design (tested below)
        with pytest.raises(InputDataError, match="no observed value|no value"):
            KNNImputer(n_neighbors=k).fit(X)
        X[0, empty] = real_table("diabetes")[0, empty]  # give each such column one value
    ours = KNNImputer(n_neighbors=k).fit_transform(X)
    ref = SkKNNImputer(n_neighbors=k, keep_empty_features=True).fit_transform(X)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)


def test_unseen_rows_of_a_duplicated_table() -> None:
    X = shaped(real_table("diabetes"), "dup25", 0.0, 0)
    train, test = X[:1000], X[1000:].copy()
    test[np.random.default_rng(5).random(test.shape) < 0.4] = np.nan
    ours = KNNImputer(n_neighbors=5).fit(train).transform(test)
    ref = SkKNNImputer(n_neighbors=5).fit(train).transform(test)
    tie_aware_check(train, test, ours, ref, 5)


@pytest.mark.parametrize("k", [5, 40])
def test_wide_tie_retry_prefix_is_bit_for_bit_the_whole_width(k: int, monkeypatch) -> None:
    # diabetes has discrete columns (sex): with half the values missing, hundreds of
    # donors tie at distance 0, so the retry is wider than the 64-candidate prefix;
    # k=40 leaves some rows without k donors in the prefix (the whole-width path)
    import datafuel.clean._knn as knn

    X = shaped(real_table("diabetes"), "raw", 0.5, seed=2)
    ours = KNNImputer(n_neighbors=k).fit_transform(X)
    np.testing.assert_allclose(ours, brute_force(X, X, k), rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(knn, "_PREFIX", 1 << 30)
    np.testing.assert_array_equal(ours, KNNImputer(n_neighbors=k).fit_transform(X))


@pytest.mark.parametrize("threads", [1, 2])
def test_transform_reports_receivers_as_blocks_finish(threads: int, monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: threads)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 6))
    X[rng.random(X.shape) < 0.1] = np.nan
    receivers = int(np.isnan(X).any(axis=1).sum())
    calls: list[tuple[int, int]] = []
    out = KNNImputer(block_size=128).fit_transform(X, on_rows=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, receivers) and calls[-1] == (receivers, receivers)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) > 5  # one report per block, in order
    np.testing.assert_array_equal(out, KNNImputer(block_size=128).fit_transform(X))


def _impute_in_child(X: np.ndarray, q: Any) -> None:
    q.put(KNNImputer().fit_transform(X))


def test_the_kept_block_pool_serves_a_forked_child() -> None:
    # big enough for the parallel path (receivers x donors >= 2**21), which keeps its
    # threads across transforms: a fork's child has none of them and must make its own
    import multiprocessing as mp

    rng = np.random.default_rng(5)
    X = rng.normal(size=(1800, 6))
    X[rng.random(X.shape) < 0.3] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    here = KNNImputer().fit_transform(X)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_impute_in_child, args=(X, q))
    p.start()
    child = q.get(timeout=120)
    p.join(30)
    assert p.exitcode == 0
    np.testing.assert_array_equal(child, here)
    np.testing.assert_allclose(here, SkKNNImputer().fit_transform(X), rtol=1e-7, atol=1e-9)
