"""Corpora with planted near-duplicates at controlled Jaccard similarities (test helper)."""

from __future__ import annotations

import numpy as np

from datafuel.dedup import near_normalize

WORDS = 300
NGRAM = 5


def vocabulary(rng: np.random.Generator, size: int = 20_000) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(size)])


def edits_for(jaccard: float, words: int = WORDS, ngram: int = NGRAM) -> int:
    """Words to replace at the end of a document so its shingle Jaccard with the original is
    ``jaccard``: sharing ``L - m - n + 1`` of ``L - n + 1`` shingles each gives
    ``J = (L - m - n + 1) / (L + m - n + 1)``."""
    s = words - ngram + 1
    return round(s * (1 - jaccard) / (1 + jaccard))


def shingles(text: str, ngram: int = NGRAM) -> set[str]:
    w = near_normalize(text).split()
    return {" ".join(w[k : k + ngram]) for k in range(max(1, len(w) - ngram + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def corpus(
    seed: int, levels: dict[float, int], singles: int = 500
) -> tuple[list[str], list[tuple[int, int, float]]]:
    """``singles`` unrelated documents, then for each level ``count`` planted pairs.

    Returns the documents and ``(i, j, exact Jaccard)`` of every planted pair.
    """
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    docs = [" ".join(vocab[rng.integers(0, vocab.size, WORDS)]) for _ in range(singles)]
    pairs: list[tuple[int, int, float]] = []
    for level, count in levels.items():
        m = edits_for(level)
        for _ in range(count):
            words = vocab[rng.integers(0, vocab.size, WORDS)]
            copy = words.copy()
            if m:
                copy[WORDS - m :] = vocab[rng.integers(0, vocab.size, m)]
            a, b = " ".join(words), " ".join(copy)
            # cosmetic differences that normalisation removes
            b = b.replace(" ", "  ", 3).upper() if rng.random() < 0.5 else b
            docs.extend([a, b])
            pairs.append((len(docs) - 2, len(docs) - 1, jaccard(a, b)))
    return docs, pairs
