"""Token-level resampling (ToEdit; Zhu et al., arXiv 2412.14689): edit only what the prior finds near-certain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datafuel.errors import ConfigError

from ._prior import Prior, Scores

__all__ = [
    "ResampleCounts",
    "check_resample_args",
    "doc_rng",
    "resample_document",
    "resample_documents",
]


@dataclass
class ResampleCounts:
    """Token counts behind a resampling report."""

    tokens: int = 0  #: every token
    eligible: int = 0  #: tokens that may be edited (not a document's first token, not EOT)
    above: int = 0  #: eligible tokens with P(x_i | x_<i) >= threshold
    changed: int = 0  #: tokens whose value actually changed (a redraw may return the original)
    documents: int = 0

    def add(self, other: ResampleCounts) -> None:
        self.tokens += other.tokens
        self.eligible += other.eligible
        self.above += other.above
        self.changed += other.changed
        self.documents += other.documents

    def to_json(self) -> dict[str, float | int]:
        return {
            "tokens": self.tokens,
            "eligible": self.eligible,
            "above_threshold": self.above,
            "changed": self.changed,
            "documents": self.documents,
            "fraction_above_threshold": self.above / self.eligible if self.eligible else 0.0,
            "fraction_changed": self.changed / self.eligible if self.eligible else 0.0,
        }


def check_resample_args(threshold: float, top_k: int, temperature: float) -> None:
    """Validate the resampling knobs (errors name the parameter, value and range)."""
    if not (0.0 < float(threshold) <= 1.0):
        raise ConfigError(f"threshold must be in (0, 1]. Got {threshold} instead.")
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"top_k must be an int >= 1. Got {top_k!r} instead.")
    if not (float(temperature) > 0.0 and np.isfinite(temperature)):
        raise ConfigError(f"temperature must be a finite number > 0. Got {temperature} instead.")


def doc_rng(seed: int, doc_index: int) -> np.random.Generator:
    """The generator for document ``doc_index``: a pure function of ``(seed, doc_index)``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(doc_index)])


def resample_document(
    doc: np.ndarray,
    scores: Scores,
    rng: np.random.Generator,
    *,
    eot_id: int,
    temperature: float = 1.5,
) -> tuple[np.ndarray, int, int]:
    """Resample one document from its teacher-forced scores; returns ``(new, above, changed)``.

    Every position the prior scored at or above the threshold (``scores.positions``:
    never the first token) that does not hold the EOT token is redrawn from the
    prior's top-k at that position with weights ``p ** (1 / temperature)``; the EOT
    token is never drawn, so document boundaries cannot move. Every other token is
    kept. All decisions use the prior's view of the ORIGINAL prefix.
    """
    new = np.array(doc, copy=True)
    pos = scores.positions
    keep = doc[pos] != eot_id
    pos = pos[keep]
    if pos.size == 0:
        return new, 0, 0
    ids = scores.top_ids[keep]
    w = np.power(np.maximum(scores.top_probs[keep], 0.0), 1.0 / temperature)
    w[ids == eot_id] = 0.0
    cw = np.cumsum(w, axis=1)
    total = cw[:, -1]
    u = rng.random(pos.size) * total
    pick = np.minimum((cw <= u[:, None]).sum(axis=1), ids.shape[1] - 1)
    drawn = ids[np.arange(pos.size), pick]
    ok = total > 0
    new[pos[ok]] = drawn[ok].astype(new.dtype)
    return new, int(pos.size), int((new[pos] != doc[pos]).sum())


def resample_documents(
    prior: Prior,
    docs: Sequence[np.ndarray],
    *,
    threshold: float = 0.99,
    top_k: int = 8,
    temperature: float = 1.5,
    seed: int = 0,
    first_index: int = 0,
) -> tuple[list[np.ndarray], ResampleCounts]:
    """Semi-synthetic copies of ``docs``: one teacher-forced pass, then per-document redraws.

    Document ``i`` of the batch uses :func:`doc_rng` ``(seed, first_index + i)``, so the
    result depends only on the seed and each document's global index, not on batching.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.synthetic import NGramPrior
    >>> docs = [np.array([5, 6, 7, 8, 0], np.uint16)] * 40
    >>> prior = NGramPrior.fit(docs, vocab_size=16, eot_id=0)
    >>> new, counts = resample_documents(prior, docs[:2], seed=1)
    >>> [len(d) for d in new], [int(d[0]) for d in new], [int(d[-1]) for d in new]
    ([5, 5], [5, 5], [0, 0])
    """
    check_resample_args(threshold, top_k, temperature)
    scores = prior.score(docs, threshold=threshold, top_k=top_k)
    out: list[np.ndarray] = []
    counts = ResampleCounts()
    for j, (d, s) in enumerate(zip(docs, scores, strict=True)):
        d = np.asarray(d)
        new, above, changed = resample_document(
            d, s, doc_rng(seed, first_index + j), eot_id=prior.eot_id, temperature=temperature
        )
        out.append(new)
        counts.tokens += len(d)
        counts.eligible += max(len(d) - 1, 0) - int((d[1:] == prior.eot_id).sum())
        counts.above += above
        counts.changed += changed
        counts.documents += 1
    return out, counts
