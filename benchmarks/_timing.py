"""The median timer every head-to-head benchmark uses: warm-up calls, then timed runs.

Run from the benchmarks (``python3 benchmarks/bench_x.py`` puts this folder on
``sys.path``): ``from _timing import median_time``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["median_time"]

T = TypeVar("T")


def median_time(
    fn: Callable[[], T], runs: int, *, warmup: int = 0, inner: int = 1
) -> tuple[float, T]:
    """Median wall seconds per call of ``fn``, and the result of its last call.

    ``warmup`` untimed calls first; then ``runs`` timed runs of ``inner`` calls each
    (a run's time divided by ``inner``: several calls per run for calls too short to
    time one by one).

    >>> seconds, out = median_time(lambda: sum(range(100)), 3, warmup=1, inner=10)
    >>> out, seconds > 0
    (4950, True)
    """
    if runs < 1 or inner < 1 or warmup < 0:
        raise ValueError(
            f"runs and inner must be >= 1 and warmup >= 0. Got {runs=}, {inner=}, {warmup=}."
        )
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times), out
