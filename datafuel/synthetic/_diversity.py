"""Diversity statistics: does a token corpus keep its long tail?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._prior import Prior

__all__ = ["distinct_n", "diversity_stats", "perplexities", "top_bigram_share"]


def _strip(docs: Sequence[np.ndarray], eot_id: int | None) -> list[np.ndarray]:
    out = []
    for d in docs:
        a = np.asarray(d, np.int64)
        if eot_id is not None:
            a = a[a != eot_id]
        out.append(a)
    return out


def _ngram_keys(docs: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Every n-gram inside a document (never across documents), one key per n-gram.

    Keys pack the n tokens base ``max_id + 1`` into a uint64 when that fits (a fast 1-D
    ``np.unique``); otherwise they are the rows of an ``(count, n)`` array.
    """
    rows = [np.lib.stride_tricks.sliding_window_view(d, n) for d in docs if len(d) >= n]
    if not rows:
        return np.zeros(0, np.uint64)
    g = np.concatenate(rows)
    base = int(g.max()) + 1 if g.size else 1
    if float(base) ** n >= 2.0**63:
        return g
    key = np.zeros(len(g), np.uint64)
    for j in range(n):
        key = key * np.uint64(base) + g[:, j].astype(np.uint64)
    return key


def distinct_n(docs: Sequence[np.ndarray], n: int, *, eot_id: int | None = None) -> float:
    """Distinct n-grams / all n-grams (Li et al. 2016), n-grams taken within documents.

    >>> distinct_n([np.array([1, 2, 1, 2])], 2)
    0.6666666666666666
    """
    g = _ngram_keys(_strip(docs, eot_id), n)
    if len(g) == 0:
        return 0.0
    return len(np.unique(g, axis=0 if g.ndim == 2 else None)) / len(g)


def top_bigram_share(
    docs: Sequence[np.ndarray], *, top: int = 50, eot_id: int | None = None
) -> float:
    """Share of all bigram occurrences taken by the ``top`` most frequent bigrams (higher = narrower)."""
    g = _ngram_keys(_strip(docs, eot_id), 2)
    if len(g) == 0:
        return 0.0
    _, c = np.unique(g, axis=0 if g.ndim == 2 else None, return_counts=True)
    return float(np.sort(c)[::-1][:top].sum() / len(g))


def perplexities(prior: Prior, docs: Sequence[np.ndarray]) -> np.ndarray:
    """Per-document perplexity under the prior: ``exp(-mean log P(x_i | x_<i))`` over all tokens."""
    if not docs:
        return np.zeros(0)
    scores = prior.score(docs, threshold=2.0, top_k=1)  # threshold > 1: no top-k work
    return np.array(
        [
            float(np.exp(-np.mean(np.log(np.maximum(s.p, 1e-300))))) if len(s.p) else np.nan
            for s in scores
        ]
    )


def diversity_stats(
    docs: Sequence[np.ndarray],
    *,
    reference: Sequence[np.ndarray] | None = None,
    eot_id: int | None = None,
    prior: Prior | None = None,
    tail_mass: float = 0.2,
    max_n: int = 4,
) -> dict[str, Any]:
    """Distinct-n, top-bigram concentration, long-tail retention and perplexity range.

    The long tail is defined on ``reference`` (the original data; ``docs`` itself when
    not given): sort its token types by frequency; the tail is the rarest types that
    together make up the last ``tail_mass`` of its tokens. ``tail_types_kept`` is the
    share of those types that still occur in ``docs``; ``tail_token_share`` the share
    of ``docs``' tokens that are tail types. A corpus that loses its tail (model
    collapse) scores low on both.
    """
    d = _strip(docs, eot_id)
    ref = _strip(reference, eot_id) if reference is not None else d
    out: dict[str, Any] = {
        "documents": len(d),
        "tokens": int(sum(len(x) for x in d)),
        "types": len(np.unique(np.concatenate(d))) if d and sum(len(x) for x in d) else 0,
    }
    for n in range(1, max_n + 1):
        out[f"distinct_{n}"] = round(distinct_n(d, n), 6)
    out["top50_bigram_share"] = round(top_bigram_share(d, top=50), 6)
    allref = np.concatenate(ref) if ref else np.zeros(0, np.int64)
    alld = np.concatenate(d) if d else np.zeros(0, np.int64)
    if allref.size:
        types, counts = np.unique(allref, return_counts=True)
        o = np.argsort(-counts, kind="stable")
        cum = np.cumsum(counts[o]) / counts.sum()
        tail = types[o][cum > 1.0 - tail_mass]
        present = np.isin(tail, alld)
        out["tail_types"] = int(tail.size)
        out["tail_types_kept"] = round(float(present.mean()) if tail.size else 1.0, 6)
        out["tail_token_share"] = round(float(np.isin(alld, tail).mean()) if alld.size else 0.0, 6)
    if prior is not None:
        ppl = perplexities(prior, docs)
        ppl = ppl[np.isfinite(ppl)]
        if ppl.size:
            out["perplexity"] = {
                "min": round(float(ppl.min()), 3),
                "median": round(float(np.median(ppl)), 3),
                "max": round(float(ppl.max()), 3),
            }
    return out
