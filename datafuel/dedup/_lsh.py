"""LSH banding of MinHash signatures: the bands, the S-curve, candidate pairs, verification.

A signature of ``num_perm`` values is cut into ``bands`` bands of ``rows`` values;
two documents become a candidate pair when any band is identical, which for
Jaccard similarity ``s`` happens with probability ``1 - (1 - s**rows)**bands``
(the S-curve). Each candidate is then verified: the fraction of equal signature
values estimates its Jaccard similarity, with standard error
``sqrt(s * (1 - s) / num_perm)``.

``threshold`` (default 0.8) is the similarity to be found: a pair at ``threshold``
must be kept. The verification therefore keeps estimates of at least
``cutoff = threshold - 2 * sqrt(threshold * (1 - threshold) / num_perm)`` (0.729 at
0.8 with 128 values), and the bands are the widest (largest ``rows``, fewest
candidates) whose S-curve is still >= 0.95 at the cutoff. With the defaults that is
21 bands of 6 rows (126 of the 128 values); :func:`s_curve` gives the probability a
pair becomes a candidate, :func:`detection` that it is also kept::

    Jaccard      0.3    0.5    0.6    0.7    0.729  0.8    0.9    1.0
    candidate    0.015  0.282  0.633  0.928  0.967  0.998  1.000  1.000
    kept         0.000  0.000  0.001  0.211  0.475  0.971  1.000  1.000
"""

from __future__ import annotations

import math

import numpy as np

from datafuel._checks import check_int
from datafuel.errors import ConfigError

from ._minhash import EMPTY
from ._mix import mix64

__all__ = ["LSHParams", "candidate_pairs", "detection", "lsh_params", "s_curve", "verify_pairs"]


class LSHParams:
    """The banding chosen for a threshold: ``bands``, ``rows``, ``cutoff``, ``num_perm``."""

    def __init__(self, threshold: float, num_perm: int, bands: int, rows: int, cutoff: float):
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = rows
        self.cutoff = cutoff

    def to_json(self) -> dict[str, float | int]:
        return {
            "threshold": self.threshold,
            "num_perm": self.num_perm,
            "bands": self.bands,
            "rows": self.rows,
            "cutoff": round(self.cutoff, 6),
        }

    def __repr__(self) -> str:
        return f"LSHParams({self.to_json()})"


def s_curve(s: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Probability that a pair of Jaccard similarity ``s`` is a candidate."""
    return 1.0 - (1.0 - np.asarray(s, np.float64) ** rows) ** bands


def lsh_params(threshold: float = 0.8, num_perm: int = 128) -> LSHParams:
    """The bands, rows and verification cutoff for ``threshold`` (see the module's table).

    >>> p = lsh_params(0.8, 128)
    >>> p.bands, p.rows, round(p.cutoff, 3)
    (21, 6, 0.729)
    """
    check_int("num_perm", num_perm, low=2)
    if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ConfigError(f"threshold must be a Jaccard similarity in (0, 1). Got {threshold!r}.")
    t = float(threshold)
    cutoff = t - 2.0 * math.sqrt(t * (1.0 - t) / num_perm)
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if float(s_curve(cutoff, bands, rows)) >= 0.95:
            best = (bands, rows)
    return LSHParams(t, num_perm, best[0], best[1], cutoff)


def detection(s: float | np.ndarray, params: LSHParams) -> np.ndarray:
    """Probability that a pair of similarity ``s`` is kept: candidate, and estimate >= cutoff."""
    from scipy.stats import binom

    s = np.asarray(s, np.float64)
    need = math.ceil(params.cutoff * params.num_perm - 1e-9)
    verified = binom.sf(need - 1, params.num_perm, s)
    return np.asarray(s_curve(s, params.bands, params.rows) * verified)


def _band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    cols = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
    key = np.full(sig.shape[0], np.uint64(band), np.uint64)
    for c in range(rows):
        key = mix64(key ^ cols[:, c])
    return key


def candidate_pairs(sig: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, that share a band (each pair once, sorted).

    In a bucket of ``k`` documents only ``2 (k - 1)`` pairs are made (each member with
    the bucket's first and with the one before it), so a large cluster of copies
    costs linear time; union-find joins the cluster all the same.
    """
    n = sig.shape[0]
    live = np.flatnonzero(~(sig == EMPTY).all(axis=1)) if n else np.zeros(0, np.int64)
    codes: list[np.ndarray] = []
    for band in range(bands):
        key = _band_keys(sig[live], band, rows)
        order = np.argsort(key, kind="stable")
        k = key[order]
        same = np.r_[False, k[1:] == k[:-1]]
        if not same.any():
            continue
        idx = live[order]
        start = np.maximum.accumulate(np.where(~same, np.arange(idx.size), 0))
        p = np.flatnonzero(same)
        for a, b in ((idx[p - 1], idx[p]), (idx[start[p]], idx[p])):
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            codes.append(lo.astype(np.int64) * n + hi)
    if not codes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.unique(np.concatenate(codes))
    u = u[u // n != u % n]
    return u // n, u % n


def verify_pairs(
    sig: np.ndarray, i: np.ndarray, j: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs whose estimated Jaccard (equal signature values) is >= ``cutoff``."""
    est = np.empty(i.size, np.float64)
    step = max(1, (1 << 22) // max(1, sig.shape[1]))
    for s in range(0, i.size, step):
        est[s : s + step] = (sig[i[s : s + step]] == sig[j[s : s + step]]).mean(axis=1)
    ok = est >= cutoff - 1e-12
    return i[ok], j[ok], est[ok]
