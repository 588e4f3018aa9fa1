"""Which split a document goes to: a stable hash of its text, salted by the seed."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from datafuel._hash import stable_fraction
from datafuel.split import SPLIT_NAMES, check_fractions

__all__ = ["assign_split", "split_router"]


def split_router(fractions: Sequence[float], seed: int) -> Callable[[str], int]:
    """``text -> split index`` (0 train, 1 val, 2 test) for these fractions and seed.

    Where one split takes every document no hash is computed.

    >>> split_router((1.0, 0.0, 0.0), seed=0)("anything")
    0
    >>> sorted({split_router((0.5, 0.5, 0.0), seed=3)(f"doc {i}") for i in range(20)})
    [0, 1]
    """
    fr = check_fractions(fractions)
    cum = [fr[0], fr[0] + fr[1]]
    nonzero = [k for k, f in enumerate(fr) if f > 0]
    if len(nonzero) == 1:
        only = nonzero[0]
        return lambda text: only
    return lambda text: bisect.bisect_right(cum, stable_fraction(text.encode("utf-8"), seed))


def assign_split(text: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0) -> str:
    """The split a document goes to: a stable hash of its text, salted by ``seed``.

    The same document lands in the same split on every run and however the corpus
    grows or is reordered; exact duplicates never straddle two splits.

    >>> assign_split("hello", (1.0, 0.0, 0.0))
    'train'
    """
    return SPLIT_NAMES[split_router(fractions, seed)(text)]
