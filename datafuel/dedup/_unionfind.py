"""Union-find over index pairs, vectorised: every element's cluster is its smallest member."""

from __future__ import annotations

import numpy as np

__all__ = ["components"]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` elements joined by the edges ``(i[k], j[k])``.

    Returns ``labels`` (int64, length ``n``): ``labels[x]`` is the smallest index in
    ``x``'s component, so the label is also the component's representative and is
    independent of edge order (the same clusters from any engine or run). Union-find
    with path compression, done for all edges at once: hook every root onto the
    smaller root across each edge (``np.minimum.at``), then jump pointers until no
    label changes.
    """
    parent = np.arange(n, dtype=np.int64)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if i.size == 0:
        return parent
    while True:
        ri, rj = parent[i], parent[j]
        low = np.minimum(ri, rj)
        before = parent.copy()
        np.minimum.at(parent, ri, low)
        np.minimum.at(parent, rj, low)
        while True:  # path compression: point every element at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        if np.array_equal(parent, before) and np.array_equal(parent[i], parent[j]):
            return parent
