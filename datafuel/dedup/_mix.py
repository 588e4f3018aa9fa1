"""Vectorised 64-bit hashing: the splitmix64 finaliser and byte-run (word) hashes."""

from __future__ import annotations

import numpy as np

__all__ = ["mix64", "word_hashes"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
#: the polynomial base of word hashes (odd, so it has an inverse mod 2**64)
_P = 0x100000001B3
_Q = pow(_P, -1, 1 << 64)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of every element (uint64 in, uint64 out; wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLD
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


_POW_Q = np.ones(1, np.uint64)


def _pow_q(n: int) -> np.ndarray:
    """``Q**i mod 2**64`` for ``i < n`` (cached; grows as needed)."""
    global _POW_Q
    if _POW_Q.size < n:
        size = max(n, 2 * _POW_Q.size)
        with np.errstate(over="ignore"):
            _POW_Q = np.cumprod(
                np.r_[np.uint64(1), np.full(size - 1, _Q, np.uint64)], dtype=np.uint64
            )
    return _POW_Q[:n]


def word_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each byte run ``data[starts[k]:ends[k]]``, with no Python loop.

    The run's polynomial hash ``sum(b_i * Q**(i - start))`` mod 2**64 comes from one
    prefix sum of ``b_i * Q**i`` (``Q**-start`` is ``P**start``, ``P = Q**-1``), then
    mixed with the run's length by :func:`mix64`.
    """
    n = int(data.size)
    pq = _pow_q(n + 1)
    with np.errstate(over="ignore"):
        c = np.zeros(n + 1, np.uint64)
        np.cumsum(data.astype(np.uint64) * pq[:n], dtype=np.uint64, out=c[1:])
        ps = _pow_p(starts)  # P**start = Q**-start, from a cached table
        raw = (c[ends] - c[starts]) * ps
        return mix64(raw ^ (ends - starts).astype(np.uint64) * _GOLD)


_POW_P = np.ones(1, np.uint64)


def _pow_p(idx: np.ndarray) -> np.ndarray:
    global _POW_P
    need = int(idx.max()) + 1 if idx.size else 1
    if _POW_P.size < need:
        size = max(need, 2 * _POW_P.size)
        with np.errstate(over="ignore"):
            _POW_P = np.cumprod(
                np.r_[np.uint64(1), np.full(size - 1, np.uint64(_P), np.uint64)], dtype=np.uint64
            )
    return _POW_P[idx]
