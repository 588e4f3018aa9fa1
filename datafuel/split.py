"""Train/val/test splitting, done before anything is fitted.

:func:`split_indices` is the primitive every ``build`` uses (tables, image files,
documents): it turns a row count and fractions into disjoint index arrays plus a
JSON-serialisable record of how (``split.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

__all__ = ["SPLIT_NAMES", "check_fractions", "split_indices"]

SPLIT_NAMES = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions: three numbers in [0, 1] summing to 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise ConfigError(
            f"split fractions must be three numbers (train, val, test). Got {len(fr)}: {fr}."
        )
    if any(not math.isfinite(f) or f < 0 or f > 1 for f in fr):
        raise ConfigError(f"split fractions must each be in [0, 1]. Got {fr} instead.")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1. Got {fr}, which sums to {sum(fr):.6g}.")
    if fr[0] == 0:
        raise ConfigError(
            f"the train fraction must be > 0: everything is fitted on train. Got {fr}."
        )
    return fr[0], fr[1], fr[2]


def _counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Largest-remainder rounding: counts sum to n; a non-zero fraction of n >= 3 gets >= 1 row."""
    raw = np.array(fractions) * n
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    for i in (1, 2):  # tiny splits (0.98/0.01/0.01 of a small table) still get a row
        if fractions[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i] += 1
            counts[0] -= 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def split_indices(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Seeded random split of ``n`` rows into train/val/test index arrays.

    Returns ``({"train": idx, "val": idx, "test": idx}, record)``; each index array
    is sorted (storage order is kept within a split) and the three are disjoint and
    cover ``range(n)``. ``record`` is what ``split.json`` stores.

    >>> parts, record = split_indices(10, (0.8, 0.1, 0.1), seed=0)
    >>> [len(parts[k]) for k in ("train", "val", "test")]
    [8, 1, 1]
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be a non-negative int. Got {n!r} instead.")
    fr = check_fractions(fractions)
    counts = _counts(int(n), fr)
    perm = np.random.default_rng(seed).permutation(int(n))
    bounds = np.cumsum((0, *counts))
    parts = {name: np.sort(perm[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SPLIT_NAMES)}
    record = {
        "method": "random",
        "seed": int(seed),
        "fractions": list(fr),
        "counts": dict(zip(SPLIT_NAMES, counts, strict=True)),
        "total": int(n),
    }
    return parts, record
