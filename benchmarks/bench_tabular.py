"""Tabular stage vs the tools a user would otherwise pick, on the same data in one run.

- KNN imputation: datafuel.clean.KNNImputer vs sklearn.impute.KNNImputer (k=5) on
  sklearn's bundled real tables (breast cancer, diabetes, wine; raw, standardised and
  every row x25; 10% of values removed at random, and diabetes x25 with 50% removed:
  none of them has real missing values), on 20,000 x 20 Gaussian with 10% missing
  (outputs checked allclose), plus datafuel alone on 100,000 x 20 (skipped with --quick).
- Scaling: datafuel StandardScaler / MinMaxScaler vs sklearn's (fit + transform).
- Winsorization: datafuel Winsorizer vs scipy.stats.mstats.winsorize (same caps).

Run: python3 benchmarks/bench_tabular.py [--quick] [--threads N]
Warm-up runs first; figures are medians; ratio = peer time / datafuel time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _timing import median_time


def missing_data(n: int, d: int, frac: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 10, size=d) + rng.normal(0, 20, size=d)
    X[rng.random(X.shape) < frac] = np.nan
    return X


def settle() -> None:
    """Let the last contender's idle BLAS threads stop spinning before the next one is timed.

    OpenBLAS's threads busy-wait for a while after each call (numpy's, so scikit-learn's
    KNN leaves two spinning); a run started right after one shares the cores with them
    (on 2 cores, ours measured 24 ms instead of 6 on breast cancer raw).
    """
    time.sleep(0.5)


def row(name: str, ours: float, peer: float | None, peer_name: str, note: str = "") -> None:
    if peer is None:
        print(f"{name:<34} datafuel {ours:8.3f} s   {'':>28} {note}")
    else:
        print(
            f"{name:<34} datafuel {ours:8.3f} s   {peer_name} {peer:8.3f} s   "
            f"ratio {peer / ours:6.1f}x {note}"
        )


def knn_section(quick: bool, impute: Any, KNNImputer: Any) -> None:
    """The KNN rows: real tables raw, standardised and x25, then Gaussian."""
    # -- KNN imputation ------------------------------------------------------------------
    from sklearn import datasets

    tables = {
        "breast cancer": datasets.load_breast_cancer().data,
        "diabetes": datasets.load_diabetes().data,
        "wine": datasets.load_wine().data,
    }
    cases = []
    for tname, T in tables.items():
        std = (T - T.mean(axis=0)) / T.std(axis=0)
        cases += [(f"{tname} raw", T, 0.1), (f"{tname} std", std, 0.1)]
        cases.append((f"{tname} x25", np.tile(T, (25, 1)), 0.1))
    cases.append(("diabetes x25, 50% missing", np.tile(tables["diabetes"], (25, 1)), 0.5))
    for cname, T, frac in cases:
        X = np.array(T, dtype=np.float64)
        X[np.random.default_rng(0).random(X.shape) < frac] = np.nan
        X = X[~np.isnan(X).all(axis=1)]
        runs = 3 if len(X) < 5000 else 1
        settle()
        t_sk, ref = median_time(lambda X=X: impute.KNNImputer().fit_transform(X), runs)
        settle()
        t_df, out = median_time(lambda X=X: KNNImputer().fit_transform(X), 3, warmup=1)
        row(f"KNN {cname} {X.shape[0]}x{X.shape[1]}", t_df, t_sk, "sklearn")

    n = 5000 if quick else 20000
    X = missing_data(n, 20, 0.10, 0)
    sk_runs = 1 if not quick else 3
    settle()
    t_sk, ref = median_time(lambda: impute.KNNImputer(n_neighbors=5).fit_transform(X), sk_runs)
    settle()
    t_df, out = median_time(lambda: KNNImputer(n_neighbors=5).fit_transform(X), 3, warmup=1)
    same = np.allclose(out, ref, rtol=1e-7, atol=1e-9)
    row(f"KNN impute {n}x20, 10% missing", t_df, t_sk, "sklearn", f"allclose={same}")
    if not quick:
        X = missing_data(100_000, 20, 0.10, 1)
        t_big, out = median_time(lambda: KNNImputer(n_neighbors=5).fit_transform(X), 1)
        row(
            "KNN impute 100000x20, 10% missing",
            t_big,
            None,
            "",
            f"(target < 60 s; NaN left: {int(np.isnan(out).sum())})",
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller KNN case, no 100k run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = ap.parse_args()

    import scipy.stats.mstats as mstats
    import torch
    from sklearn import impute, preprocessing

    from datafuel.clean import KNNImputer, Winsorizer
    from datafuel.scale import MinMaxScaler, StandardScaler

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads {torch.get_num_threads()}, CUDA {torch.cuda.is_available()}, "
        f"numpy {np.__version__}"
    )

    knn_section(args.quick, impute, KNNImputer)

    # -- scalers ------------------------------------------------------------------------
    rng = np.random.default_rng(2)
    S = rng.normal(size=(200_000, 20)) * 100 + 5
    S32 = S.astype(np.float32)
    for name, ours, peer in (
        ("StandardScaler 200000x20 f64", StandardScaler, preprocessing.StandardScaler),
        ("MinMaxScaler 200000x20 f64", MinMaxScaler, preprocessing.MinMaxScaler),
    ):
        t_p, a = median_time(lambda peer=peer: peer().fit_transform(S), 5, warmup=1)
        t_o, b = median_time(lambda ours=ours: ours().fit_transform(S), 5, warmup=1)
        row(name, t_o, t_p, "sklearn", f"allclose={np.allclose(a, b)}")
    t_p, _ = median_time(lambda: preprocessing.StandardScaler().fit_transform(S32), 5, warmup=1)
    t_o, b = median_time(lambda: StandardScaler().fit_transform(S32), 5, warmup=1)
    row("StandardScaler 200000x20 f32", t_o, t_p, "sklearn", f"out dtype {b.dtype}")

    # -- winsorization --------------------------------------------------------------------
    W = rng.lognormal(3, 1, size=(200_000, 20))
    t_p, a = median_time(
        lambda: np.asarray(mstats.winsorize(W, limits=(0.01, 0.01), axis=0)), 3, warmup=1
    )
    t_o, b = median_time(lambda: Winsorizer(0.01, 0.99).fit_transform(W), 3, warmup=1)
    row("Winsorize 200000x20 (1%, 99%)", t_o, t_p, "scipy  ", f"equal={np.array_equal(a, b)}")


if __name__ == "__main__":
    main()
