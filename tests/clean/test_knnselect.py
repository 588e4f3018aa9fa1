"""The native kernels behind KNNImputer (datafuel.clean._knnselect), held to their numpy
definitions: the same distances bit for bit, the same k smallest quotients, and an error
(never a crash or a write) for every malformed argument."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn import datasets
from sklearn.impute import KNNImputer as SkKNN

import datafuel.clean._knn as knn_mod
from datafuel.clean import KNNImputer
from datafuel.clean._knn import _exact_dist

S = pytest.importorskip("datafuel.clean._knnselect", reason="the C extension did not build")


def _quotients(num: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        q = num / cnt
    q[np.isnan(q)] = np.inf  # no coordinate in common: never a neighbour
    return q


def _run_update(num, cnt, kk, chunks):
    b = num.shape[0]
    hv = np.full((b, kk), np.inf, dtype=num.dtype)
    hi = np.full((b, kk), -1, dtype=np.int64)
    edges = np.linspace(0, num.shape[1], chunks + 1).astype(int)
    for d0, d1 in itertools.pairwise(edges):
        S.update(
            np.ascontiguousarray(num[:, d0:d1]), np.ascontiguousarray(cnt[:, d0:d1]), hv, hi, d0
        )
    return hv, hi


def _check_selected(q: np.ndarray, hv: np.ndarray, hi: np.ndarray, kk: int) -> None:
    ref = np.sort(q, axis=1)[:, :kk]
    ref = np.pad(ref, ((0, 0), (0, kk - ref.shape[1])), constant_values=np.inf)  # kk > m
    assert np.array_equal(np.sort(hv, axis=1), ref)  # the kk smallest values, ties included
    assert (hv[:, 0] == hv.max(axis=1)).all()  # the largest kept first
    finite = np.isfinite(hv)
    assert np.array_equal(np.take_along_axis(q, np.where(finite, hi, 0), 1)[finite], hv[finite])
    assert (hi[~finite] == -1).all()
    for row in hi:  # no donor twice
        kept = row[row >= 0]
        assert len(set(kept.tolist())) == kept.size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(3, 7, 2), (40, 300, 26), (17, 1000, 5), (9, 5000, 26), (5, 40, 60)]
)
@pytest.mark.parametrize("chunks", [1, 3])
def test_update_keeps_the_kk_smallest_quotients(dtype, shape, chunks) -> None:
    b, m, kk = shape
    rng = np.random.default_rng(b * m + kk)
    num = (rng.random((b, m)) * 10 - 0.01).astype(
        dtype
    )  # a few slightly negative, as rounding gives
    cnt = rng.integers(0, 5, (b, m)).astype(dtype)
    num[cnt == 0] = 0  # no coordinate in common: 0 / 0
    hv, hi = _run_update(num, cnt, kk, chunks)
    _check_selected(_quotients(num, cnt), hv, hi, kk)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_with_ties_duplicates_and_rows_with_few_finite_quotients(dtype) -> None:
    rng = np.random.default_rng(3)
    b, m, kk = 12, 2000, 26
    num = np.round(rng.random((b, m)) * 4).astype(dtype)  # values 0..4: ties everywhere
    cnt = np.ones((b, m), dtype)
    num[0] = 0  # a row of exact duplicates
    cnt[1, :] = 0
    num[1, :] = 0
    cnt[1, :7] = 1  # only 7 finite quotients: all of them, the rest +inf / -1
    num[2, ::3] = 0  # a tie of 667 at zero
    hv, hi = _run_update(num, cnt, kk, 2)
    _check_selected(_quotients(num, cnt), hv, hi, kk)
    assert np.isinf(hv[1, 0]) and (hi[1] >= 0).sum() == 7


def test_update_partial_rebuilds_the_rows_it_is_given() -> None:
    rng = np.random.default_rng(4)
    b, m, n, d, kk, off = 20, 700, 900, 6, 26, 150
    ab = rng.normal(size=(b, m)).astype(np.float32)
    sd = (rng.random((1, n)) * 50).astype(np.float32)
    pt = (rng.random((d, n)) < 0.8).astype(np.float32)
    qt = (rng.random((d, n)) * 3).astype(np.float32) * pt
    cd = pt.sum(axis=0, keepdims=True)
    miss = np.full((b, 3), -1, dtype=np.int64)
    for r in range(b):
        k = r % 4
        miss[r, : min(k, 3)] = rng.choice(d, size=min(k, 3), replace=False)
    hv = np.full((b, kk), np.inf, np.float32)
    hi = np.full((b, kk), -1, np.int64)
    S.update_partial(ab, miss, sd, cd, qt, pt, hv, hi, off)
    # the same arithmetic in numpy, in the same order: ab + sd, less each missing feature
    num = ab + sd[:, off : off + m]
    cnt = np.broadcast_to(cd[:, off : off + m], (b, m)).copy()
    for r in range(b):
        for f in miss[r][miss[r] >= 0]:
            num[r] -= qt[f, off : off + m]
            cnt[r] -= pt[f, off : off + m]
    num[cnt <= 0] = 0
    q = _quotients(num, cnt)
    ref = np.sort(q, axis=1)[:, :kk]
    assert np.array_equal(np.sort(hv, axis=1), ref)
    finite = np.isfinite(hv)
    assert np.array_equal(
        np.take_along_axis(q, np.where(finite, hi - off, 0), 1)[finite], hv[finite]
    )


@pytest.mark.parametrize("d", [1, 3, 7, 8, 13, 20, 30, 64, 129, 300])
def test_exact_equals_the_numpy_distance_bit_for_bit(d: int) -> None:
    rng = np.random.default_rng(d)
    n, b, w = 200, 30, 19
    F = rng.normal(size=(n, d)) * 10.0 ** rng.uniform(-3, 4, d)
    R = rng.normal(size=(b, d)) * 10.0 ** rng.uniform(-3, 4, d)
    F[rng.random(F.shape) < 0.3] = np.nan
    R[rng.random(R.shape) < 0.3] = np.nan
    F[5] = np.nan  # a donor with nothing: +inf to everyone
    cand = rng.integers(0, n, (b, w))
    cand[:, 0] = 5
    out = np.empty((b, w))
    S.exact(R, F, cand, out)
    ref = _exact_dist(R[:, None, :], F[cand])
    assert np.array_equal(out, ref)
    assert np.isinf(out[:, 0]).all()


def _bad_calls():
    f4 = np.zeros((4, 8), np.float32)
    f8 = np.zeros((4, 8))
    hv4 = np.full((4, 3), np.inf, np.float32)
    hi = np.full((4, 3), -1, np.int64)
    ro = np.zeros((4, 3), np.float32)
    ro.flags.writeable = False
    yield "update", (f8, f4, hv4, hi, 0), ValueError  # mixed formats
    yield "update", (f4, f4, hv4, hi.astype(np.int32), 0), ValueError
    yield "update", (f4, f4[:3], hv4, hi, 0), ValueError  # shapes
    yield "update", (f4, f4, hv4[:, :0].copy(), hi[:, :0].copy(), 0), ValueError  # kk = 0
    yield "update", (f4, f4, hv4, hi, -1), ValueError
    yield "update", (f4, f4, hv4, hi, 2**63 - 4), ValueError  # offset + m overflows int64
    yield "update", (f4[:, ::2], f4[:, ::2], hv4, hi, 0), TypeError  # not contiguous
    yield "update", (f4, f4, ro, hi, 0), TypeError  # read-only output
    yield "update", (f4.astype(np.int32), f4, hv4, hi, 0), ValueError
    yield "update", (np.zeros(8, np.float32), f4, hv4, hi, 0), ValueError  # 1-D
    R, F = np.zeros((4, 5)), np.zeros((10, 5))
    cand, out = np.zeros((4, 3), np.int64), np.zeros((4, 3))
    yield "exact", (R, F, cand + 10, out), ValueError  # a row past F
    yield "exact", (R, F, cand - 1, out), ValueError
    yield "exact", (R, F[:, :4].copy(), cand, out), ValueError
    yield "exact", (R.astype(np.float32), F, cand, out), ValueError
    yield "exact", (np.zeros((4, 9000)), np.zeros((10, 9000)), cand, out), ValueError
    X, P, todo = np.zeros((6, 5)), np.ones((10, 5), bool), np.ones((6, 5), bool)
    blk, sp = np.arange(4, dtype=np.int64)[None, :], np.zeros((1, 2), np.int64)
    bounds, means, unsafe, retry = (
        np.zeros((4, 4)),
        np.zeros((1, 5)),
        np.zeros((4, 5), np.int8),
        np.zeros((1, 4)),
    )
    ok = (X, blk, F, P, cand, sp, todo, bounds, means, X.copy(), unsafe, retry, 3, False)

    def with_(i, value):
        args = list(ok)
        args[i] = value
        return tuple(args)

    yield "rank", with_(1, blk + 3), ValueError  # receiver 6 of 6 rows
    yield "rank", with_(4, cand + 10), ValueError  # a donor past F
    yield "rank", with_(4, cand - 2), ValueError  # below the -1 padding
    yield "rank", with_(5, sp - 1), ValueError  # a special donor that is not one
    yield "rank", with_(3, P.astype(np.float64)), ValueError
    yield "rank", with_(10, unsafe.astype(np.int16)), ValueError
    yield "rank", with_(7, bounds[:3].copy()), ValueError
    yield "rank", with_(12, 0), ValueError  # k = 0
    yield "rank", with_(9, np.zeros((6, 5), np.float32)), ValueError
    yield "rank", with_(2, F[:, :4].copy()), ValueError
    ab = np.zeros((4, 8), np.float32)
    miss = np.full((4, 2), -1, np.int64)
    sd = np.zeros((1, 8), np.float32)
    qt = np.zeros((3, 8), np.float32)
    yield "update_partial", (ab, miss + 5, sd, sd, qt, qt, hv4, hi, 0), ValueError  # feature 4 of 3
    yield "update_partial", (ab, miss - 1, sd, sd, qt, qt, hv4, hi, 0), ValueError
    yield "update_partial", (ab, miss, sd, sd, qt, qt, hv4, hi, 1), ValueError  # past the donors
    yield "update_partial", (ab, miss, sd[:, :7].copy(), sd, qt, qt, hv4, hi, 0), ValueError
    yield "update_partial", (ab, miss, sd, sd, qt, qt.astype(np.float64), hv4, hi, 0), ValueError


@pytest.mark.parametrize("name,args,exc", list(_bad_calls()))
def test_malformed_arguments_raise_and_write_nothing(name, args, exc) -> None:
    outs = [a for a in args if isinstance(a, np.ndarray) and a.flags.writeable]
    before = [a.copy() for a in outs]
    with pytest.raises(exc):
        getattr(S, name)(*args)
    for a, b in zip(outs, before, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def _tables():
    rng = np.random.default_rng(0)
    bc = datasets.load_breast_cancer().data
    diab = datasets.load_diabetes().data
    g = rng.normal(size=(3000, 12)) * rng.uniform(0.5, 10, 12)
    for name, T, frac in (
        ("breast cancer raw", bc, 0.1),
        ("diabetes x8", np.tile(diab, (8, 1)), 0.1),  # ties of 8 at distance 0
        ("diabetes x8 50%", np.tile(diab, (8, 1)), 0.5),
        ("gaussian", g, 0.1),
    ):
        X = np.array(T, dtype=np.float64)
        X[rng.random(X.shape) < frac] = np.nan
        yield name, X[~np.isnan(X).all(axis=1)]


@pytest.mark.parametrize("name,X", list(_tables()), ids=lambda v: v if isinstance(v, str) else "")
def test_native_numpy_and_float64_screens_give_the_same_imputation(name, X, monkeypatch) -> None:
    native = KNNImputer(block_size=128).fit_transform(X)
    if "x8" not in name:  # with exact ties sklearn's pick among them is argpartition's
        np.testing.assert_allclose(native, SkKNN().fit_transform(X), rtol=1e-7, atol=1e-9)
    # the float64 screen only
    monkeypatch.setattr(KNNImputer, "_float32_ok", lambda self: False)
    np.testing.assert_array_equal(KNNImputer(block_size=128).fit_transform(X), native)
    monkeypatch.undo()
    # without the extension: torch / numpy top-k and the numpy distances
    monkeypatch.setattr(knn_mod, "_knnselect", None)
    np.testing.assert_allclose(KNNImputer(block_size=128).fit_transform(X), native, rtol=1e-12)


def test_the_float32_screen_is_taken_only_where_its_bound_holds(monkeypatch) -> None:
    seen: list[bool] = []
    real = KNNImputer._candidates

    def spy(self, R, n_cand, f32=False):
        seen.append(f32)
        return real(self, R, n_cand, f32)

    monkeypatch.setattr(KNNImputer, "_candidates", spy)
    rng = np.random.default_rng(1)
    g = rng.normal(size=(4000, 10))
    g[rng.random(g.shape) < 0.1] = np.nan
    KNNImputer(block_size=64).fit_transform(g)
    assert seen[0] and sum(seen) > len(seen) // 2  # standard data: float32 after block 0
    # a feature of 1e9 next to features of 1: float32's rounding of the product exceeds the
    # gaps between neighbours, block 0 shows it, and the rest runs in float64
    seen.clear()
    h = g.copy()
    h[:, 0] = rng.normal(size=len(h)) * 1e9
    out = KNNImputer(block_size=64).fit_transform(h)
    assert seen[0] and not any(seen[1:])
    np.testing.assert_allclose(out, SkKNN().fit_transform(h), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("name,X", list(_tables()), ids=lambda v: v if isinstance(v, str) else "")
def test_native_rank_imputes_as_the_numpy_rank(name, X, weights, monkeypatch) -> None:
    native = KNNImputer(weights=weights, block_size=128).fit_transform(X)
    monkeypatch.setattr(knn_mod, "_NATIVE_RANK", False)
    numpy_rank = KNNImputer(weights=weights, block_size=128).fit_transform(X)
    assert not np.isnan(native).any()
    # the same donors, and the mean summed in numpy's order: equal bit for bit
    np.testing.assert_array_equal(native, numpy_rank)


def test_native_rank_block_gives_the_numpy_codes_and_thresholds(monkeypatch) -> None:
    # one block by hand: candidates with -1 padding, special donors among them, columns
    # no candidate has, and bounds that leave some entries unsafe (both codes)
    rng = np.random.default_rng(3)
    F = np.round(rng.normal(size=(300, 6)), 1)  # rounded: ties at equal distances
    F[rng.random(F.shape) < 0.3] = np.nan
    F[:, 5] = np.nan
    F[:3, 5] = 1.0  # a column only three donors have
    imp = KNNImputer(n_neighbors=4).fit(F)
    X = F[:40].copy()
    X[rng.random(X.shape) < 0.3] = np.nan
    X[:, 5] = np.nan
    X[20:, 5] = 1.0  # rows 20..: finite retry thresholds (no column short of donors)
    X[np.isnan(X).all(axis=1), 0] = 0.5
    todo = np.isnan(X)
    blk = np.arange(len(X))
    cand = rng.integers(-1, 300, size=(len(X), 12))
    cand[:, :3] = imp._special[:3]  # duplicates of the special donors
    kth = rng.random(len(X)) * 2.0
    kth[::7] = np.inf
    # rows 20..: kth just above the 4th nearest candidate, so that the k-th donor lies
    # between the float32 bound and the float64 one (code _MISS_PRECISION) on some
    for i in range(20, len(X)):
        c = np.unique(np.concatenate([cand[i][cand[i] >= 0], imp._special]))
        dist = np.sort(_exact_dist(X[i][None, None, :], F[c][None])[0])
        kth[i] = dist[3] * (1 + 1e-9) + 1e-9
    results = []
    for native in (True, False):
        monkeypatch.setattr(knn_mod, "_NATIVE_RANK", native)
        out = X.copy()
        unsafe, retry = imp._rank_block(X, blk, todo, out, cand.copy(), kth.copy(), True)
        results.append((out, unsafe, retry))
    (o1, u1, r1), (o2, u2, r2) = results
    assert set(np.unique(u1)) == {0, 1, 2}  # the case has safe entries and both codes
    np.testing.assert_array_equal(u1, u2)
    assert np.isfinite(r1[20:]).sum() >= 5  # thresholds to compare, not only +-inf
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(o1[~todo], X[~todo])  # only the entries to do are written
