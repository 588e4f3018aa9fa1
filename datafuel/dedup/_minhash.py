"""MinHash signatures of documents over word n-gram shingles, vectorised with numpy.

A document is normalised (Unicode NFC, lower-cased, whitespace collapsed to single
spaces), cut into words at the spaces, and each run of ``ngram`` consecutive words
(a shingle; a document of fewer words is one shingle of all of them) is hashed to
64 bits. No Python code runs per word or per shingle: a batch of documents is one
byte array, its words are found with array comparisons, each word is hashed from a
prefix sum (:func:`~datafuel.dedup._mix.word_hashes`), and a shingle hash combines
``ngram`` shifted word-hash arrays. Permutation ``p`` of the signature is the
multiply-shift hash ``(a_p * x + b_p) mod 2**64 >> 32`` (``a_p`` odd), and the
signature is its minimum over the document's shingles (``np.minimum.reduceat``).
"""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from datafuel._checks import check_int

from ._mix import mix64, word_hashes

__all__ = ["EMPTY", "minhash_signatures", "near_normalize", "shingle_hashes"]

#: the signature value of a document with no words (it matches nothing)
EMPTY = np.uint32(0xFFFFFFFF)
_BATCH_BYTES = 1 << 19
_SPACE = 0x20
_K = mix64(np.arange(1, 33, dtype=np.uint64))  # per-position multipliers of a shingle


def near_normalize(text: str) -> str:
    """The text near-duplicates are judged on: NFC, lower-case, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every document's word ``ngram``-shingles, and each one's document.

    Returns ``(hashes, doc)``: ``doc`` is non-decreasing (shingles in document order).
    A document without words has no shingle.
    """
    norm = [near_normalize(t) for t in texts]
    if not norm:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    blob = " ".join(norm).encode("utf-8")
    data = np.frombuffer(blob, np.uint8)
    lens = np.fromiter((len(t.encode("utf-8")) for t in norm), np.int64, len(norm))
    doc_start = np.r_[0, np.cumsum(lens + 1)[:-1]]
    word = data != _SPACE
    edge = np.diff(np.r_[False, word, False].astype(np.int8))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    w = word_hashes(data, starts, ends)
    doc = np.searchsorted(doc_start, starts, side="right") - 1
    m = w.size
    if m == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    first = np.r_[True, doc[1:] != doc[:-1]]
    count = np.bincount(doc, minlength=len(norm))
    acc = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            shifted = np.zeros(m, np.uint64)
            same = np.zeros(m, bool)
            if k < m:
                shifted[: m - k] = w[k:]
                same[: m - k] = doc[k:] == doc[: m - k]
            acc += np.where(same, shifted, np.uint64(0)) * _K[k]
        full = np.zeros(m, bool)
        if ngram - 1 < m:
            full[: m - ngram + 1] = doc[ngram - 1 :] == doc[: m - ngram + 1]
        short = first & (count[doc] < ngram)
        keep = full | short
    return mix64(acc[keep]), doc[keep]


def _perms(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x6D696E68])
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
    return a, b


def _batch_signatures(texts: Sequence[str], ngram: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full((len(texts), a.size), EMPTY, np.uint32)
    h, doc = shingle_hashes(texts, ngram)
    if h.size == 0:
        return out
    seg = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    step = max(1, (1 << 21) // a.size)  # shingles per block: about 16 MB of uint64 at a time
    mins: list[np.ndarray] = []
    with np.errstate(over="ignore"):
        # blocks end on document boundaries, so each document's minimum is taken once
        cuts = np.searchsorted(seg, np.arange(0, h.size, step), side="left")
        bounds = np.unique(np.r_[cuts, seg.size]).tolist()
        for s, e in itertools.pairwise(bounds):
            lo = int(seg[s])
            hi = int(seg[e]) if e < seg.size else h.size
            v = ((h[lo:hi, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
            mins.append(np.minimum.reduceat(v, seg[s:e] - lo, axis=0))
    out[doc[seg]] = np.concatenate(mins)
    return out


def minhash_signatures(
    texts: Sequence[str],
    *,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 0,
    workers: int | None = None,
) -> np.ndarray:
    """MinHash signatures, ``(len(texts), num_perm)`` uint32; the same for a seed on any host.

    Batches of about 512 KiB of text run on ``workers`` threads (numpy releases the
    GIL; default: the CPU count, at most 8). A document with no words gets
    :data:`EMPTY` everywhere.

    >>> s = minhash_signatures(["the cat sat on the mat today", "the cat sat on the mat today"])
    >>> bool((s[0] == s[1]).all()), s.shape
    (True, (2, 128))
    """
    check_int("num_perm", num_perm, low=1)
    check_int("ngram", ngram, low=1, high=32)
    a, b = _perms(num_perm, seed)
    batches: list[tuple[int, int]] = []
    start = size = 0
    for k, t in enumerate(texts):
        size += len(t)
        if size >= _BATCH_BYTES:
            batches.append((start, k + 1))
            start, size = k + 1, 0
    if start < len(texts) or not batches:
        batches.append((start, len(texts)))
    workers = workers or min(os.cpu_count() or 1, 8)

    def run(span: tuple[int, int]) -> np.ndarray:
        return _batch_signatures(texts[span[0] : span[1]], ngram, a, b)

    if workers == 1 or len(batches) == 1:
        parts = [run(s) for s in batches]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="datafuel-minhash") as pool:
            parts = list(pool.map(run, batches))
    return np.concatenate(parts) if parts else np.zeros((0, num_perm), np.uint32)
