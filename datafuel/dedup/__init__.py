"""Duplicates and near-duplicates: content keys, signatures, clusters; pure pieces.

Builds use these so that a cluster of copies is one group of the split (never on
both sides of train/test); ``datafuel audit`` uses them to find the copies across
shard sets that were built another way.

- **Exact**: :func:`text_key` (Unicode NFC, whitespace collapsed, case kept),
  :func:`image_keys` (the decoded, EXIF-oriented pixels), :func:`row_keys` (feature
  values or key columns of a table).
- **Near-duplicate text**: :func:`minhash_signatures` over word 5-gram shingles, LSH
  banding chosen by :func:`lsh_params` for a Jaccard threshold (0.8 by default; the
  S-curve is in :mod:`datafuel.dedup._lsh`), candidates verified on their signatures
  (:func:`verify_pairs`), clusters by union-find (:func:`components`).
- **Near-duplicate images**: :func:`phash` (64-bit DCT pHash) within a Hamming
  distance (:func:`hamming_pairs`).
- :func:`text_clusters`, :func:`image_clusters`, :func:`row_clusters` return
  :class:`Clusters`; :func:`cluster_splits` keeps each cluster on one side of a split.
"""

from __future__ import annotations

from ._clusters import (
    METHODS,
    Clusters,
    check_method,
    cluster_splits,
    image_clusters,
    near_text_clusters,
    row_clusters,
    text_clusters,
)
from ._exact import exact_normalize, key_labels, row_keys, text_key
from ._lsh import LSHParams, candidate_pairs, detection, lsh_params, s_curve, verify_pairs
from ._minhash import EMPTY, minhash_signatures, near_normalize, shingle_hashes
from ._phash import HAMMING, hamming_pairs, image_keys, phash
from ._unionfind import components

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "Clusters",
    "EMPTY",
    "HAMMING",
    "LSHParams",
    "METHODS",
    "candidate_pairs",
    "check_method",
    "cluster_splits",
    "components",
    "detection",
    "exact_normalize",
    "hamming_pairs",
    "image_clusters",
    "image_keys",
    "key_labels",
    "lsh_params",
    "minhash_signatures",
    "near_normalize",
    "near_text_clusters",
    "phash",
    "row_clusters",
    "row_keys",
    "s_curve",
    "shingle_hashes",
    "text_clusters",
    "text_key",
    "verify_pairs",
]
