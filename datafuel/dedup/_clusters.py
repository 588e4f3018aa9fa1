"""Clusters of duplicates, for texts, images and table rows, and how they meet the split."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

from ._exact import key_labels, row_keys, text_key
from ._lsh import candidate_pairs, lsh_params, verify_pairs
from ._minhash import minhash_signatures
from ._phash import HAMMING, hamming_pairs
from ._unionfind import components

__all__ = [
    "METHODS",
    "Clusters",
    "check_method",
    "cluster_splits",
    "image_clusters",
    "near_text_clusters",
    "row_clusters",
    "text_clusters",
]

METHODS = ("none", "exact", "near")


def check_method(method: str, kind: str = "text") -> str:
    """``method`` if it is one of :data:`METHODS` (tables: ``none`` or ``exact``)."""
    allowed = ("none", "exact") if kind == "table" else METHODS
    if method not in allowed:
        raise ConfigError(
            f"dedup for {kind} must be {', '.join(allowed[:-1])} or {allowed[-1]}. "
            f"Got {method!r} instead."
            + (
                " Near duplicates are defined for texts and images only."
                if method == "near"
                else ""
            )
        )
    return method


@dataclass
class Clusters:
    """Duplicate clusters of ``n`` records.

    ``labels[x]`` is the smallest index of ``x``'s cluster (its representative; a
    record without duplicates is its own). ``pairs`` holds the verified near pairs
    ``(i, j, similarity)`` that joined clusters (for texts the estimated Jaccard,
    for images ``1 - hamming / 64``); exact duplicates have similarity 1.
    """

    labels: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    )

    @property
    def n(self) -> int:
        return int(self.labels.size)

    def representatives(self) -> np.ndarray:
        """Mask of the records kept by ``keep="one"``: each cluster's smallest index."""
        return self.labels == np.arange(self.n)

    def members(self) -> list[np.ndarray]:
        """The clusters of two or more records, each sorted, by their representative."""
        if self.n == 0:
            return []
        order = np.argsort(self.labels, kind="stable")
        lab = self.labels[order]
        cuts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1], True])
        return [order[a:b] for a, b in itertools.pairwise(cuts) if b - a > 1]

    def to_json(
        self, describe: Callable[[int], Any] | None = None, examples: int = 10
    ) -> dict[str, Any]:
        """Counts and sizes of the clusters, and the first ``examples`` of them."""
        groups = self.members()
        sizes = np.array([g.size for g in groups], np.int64)
        hist = dict(zip(*np.unique(sizes, return_counts=True), strict=True)) if groups else {}
        show = (lambda k: int(k)) if describe is None else describe
        return {
            "method": self.method,
            "params": dict(self.params),
            "records": self.n,
            "clusters": len(groups),
            "duplicates": int(sizes.sum() - sizes.size) if groups else 0,
            "largest": int(sizes.max()) if groups else 0,
            "sizes": {str(int(k)): int(v) for k, v in hist.items()},
            "examples": [[show(int(x)) for x in g[:5]] for g in groups[:examples]],
        }


def _merge(n: int, labels: Sequence[np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    ii = [i] + [np.arange(n, dtype=np.int64) for _ in labels]
    jj = [j] + [np.asarray(lab, np.int64) for lab in labels]
    return components(n, np.concatenate(ii), np.concatenate(jj))


def text_clusters(
    texts: Sequence[str],
    method: str = "exact",
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 0,
    workers: int | None = None,
) -> Clusters:
    """Exact (normalised-equal) or near-duplicate (MinHash LSH) clusters of documents.

    ``near`` clusters documents whose word-``ngram`` Jaccard similarity reaches
    ``threshold`` (see :mod:`datafuel.dedup._lsh` for the banding and its S-curve),
    and exact duplicates with them. The same texts and seed give the same clusters.

    >>> c = text_clusters(["a b", "a  b", "c"], "exact")
    >>> c.labels.tolist()
    [0, 0, 2]
    """
    check_method(method)
    n = len(texts)
    if method == "none":
        return Clusters(np.arange(n, dtype=np.int64), method)
    exact = key_labels(np.array([text_key(t) for t in texts], dtype="S16"))
    if method == "exact":
        return Clusters(exact, method, {"normalize": "NFC, whitespace collapsed, case kept"})
    sig = minhash_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed, workers=workers)
    return near_text_clusters(exact, sig, threshold=threshold, ngram=ngram, seed=seed)


def near_text_clusters(
    exact: np.ndarray, sig: np.ndarray, *, threshold: float = 0.8, ngram: int = 5, seed: int = 0
) -> Clusters:
    """Near-duplicate clusters from exact labels and MinHash signatures made beforehand.

    For corpora streamed in batches: :func:`key_labels` of the :func:`text_key` of
    every document, and :func:`minhash_signatures` of the batches, stacked.
    """
    p = lsh_params(threshold, sig.shape[1])
    ci, cj = candidate_pairs(sig, p.bands, p.rows)
    i, j, est = verify_pairs(sig, ci, cj, p.cutoff)
    params = {**p.to_json(), "ngram": ngram, "seed": int(seed), "candidates": int(ci.size)}
    return Clusters(_merge(sig.shape[0], [exact], i, j), "near", params, (i, j, est))


def image_clusters(
    keys: Sequence[bytes], hashes: np.ndarray, method: str = "exact", *, max_distance: int = HAMMING
) -> Clusters:
    """Exact (same decoded pixels) or near (pHash within ``max_distance``) image clusters."""
    check_method(method, "images")
    n = len(keys)
    if method == "none":
        return Clusters(np.arange(n, dtype=np.int64), method)
    exact = key_labels(np.array(list(keys), dtype="S16"))
    if method == "exact":
        return Clusters(exact, method, {"key": "blake2b-128 of the oriented decoded pixels"})
    i, j, d = hamming_pairs(np.asarray(hashes, np.uint64), max_distance)
    params = {"hash": "DCT pHash, 64 bits", "max_distance": int(max_distance)}
    return Clusters(_merge(n, [exact], i, j), method, params, (i, j, 1.0 - d / 64.0))


def row_clusters(table: Any, columns: Sequence[str], method: str = "exact") -> Clusters:
    """Rows of a pyarrow table equal on ``columns`` (see :func:`row_keys`)."""
    check_method(method, "table")
    if method == "none":
        return Clusters(np.arange(table.num_rows, dtype=np.int64), method)
    labels = key_labels(row_keys(table, columns))
    return Clusters(labels, method, {"columns": list(columns)})


def cluster_splits(
    which: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """Each record's split with every cluster (and group) on one side.

    ``which`` is a split number per record from any split rule, ``labels`` the
    clusters. Every cluster goes where its representative (smallest index) went;
    with ``groups`` (a group number per record, as in a group-aware split), the
    groups joined by clusters move as one. A record whose cluster has no other
    member keeps its split, so without duplicates nothing moves.
    """
    which = np.asarray(which)
    lab = np.asarray(labels, np.int64)
    if groups is not None:
        g = np.asarray(groups)
        _, inverse = np.unique(g, return_inverse=True)
        first = np.full(inverse.max() + 1 if inverse.size else 0, which.size, np.int64)
        np.minimum.at(first, inverse, np.arange(which.size))
        lab = _merge(
            which.size, [lab, first[inverse]], np.zeros(0, np.int64), np.zeros(0, np.int64)
        )
    return which[lab]
