"""Batches of a Loader as numpy copies, and their exact comparison (the remote tests' oracle)."""

from __future__ import annotations

import itertools

import numpy as np

from datafuel.loaders import Loader


def batches(loader: Loader, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """The loader's batches (the first ``limit``, then the pass closed) as numpy copies."""
    it = iter(loader)
    out = [{k: v.numpy().copy() for k, v in b.items()} for b in itertools.islice(it, limit)]
    if limit is not None:
        it.close()  # type: ignore[attr-defined]
    return out


def same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    """Equal batch for batch: the same fields, dtypes and values."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k
