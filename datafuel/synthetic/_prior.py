"""The interface every prior implements: teacher-forced scores, next-token distributions, sampling."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

__all__ = ["Prior", "Scores", "apply_decoding"]


@dataclass
class Scores:
    """A frozen prior's teacher-forced view of one document.

    Attributes
    ----------
    p
        ``(n,)`` float64: ``P(x_i | x_<i)`` for every token of the document, each
        conditioned on the original prefix (``x_0`` on the start-of-document context).
    positions
        ``(m,)`` int64, ascending: positions ``i >= 1`` with ``p[i] >= threshold``.
    top_ids, top_probs
        ``(m, k)``: the prior's ``k`` most likely tokens at each of ``positions`` and
        their probabilities, most likely first.
    """

    p: np.ndarray
    positions: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray


def apply_decoding(probs: np.ndarray, top_k: int | None, temperature: float) -> np.ndarray:
    """Rows of probabilities -> sampling weights: keep the ``top_k`` largest, ``p ** (1/T)``, renormalise."""
    w = np.array(probs, dtype=np.float64, copy=True)
    if top_k is not None and top_k < w.shape[1]:
        cut = np.partition(w, w.shape[1] - top_k, axis=1)[:, w.shape[1] - top_k][:, None]
        w[w < cut] = 0.0
    if temperature != 1.0:
        w = np.power(w, 1.0 / temperature)
    s = w.sum(axis=1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0)


class Prior(ABC):
    """A frozen next-token model over a shard set's vocabulary.

    Subclasses implement :meth:`score` (one teacher-forced pass over documents) and
    :meth:`next_token_probs` (the distribution after arbitrary prefixes), and set
    ``vocab_size`` and ``eot_id``. Every document is read as if preceded by the
    end-of-document token, which is how documents follow one another in a token
    stream.
    """

    vocab_size: int
    eot_id: int

    @abstractmethod
    def score(
        self, docs: Sequence[np.ndarray], *, threshold: float = 0.99, top_k: int = 8
    ) -> list[Scores]:
        """Teacher-forced scores of each document; top-k only where ``p >= threshold``."""

    @abstractmethod
    def next_token_probs(self, contexts: Sequence[np.ndarray]) -> np.ndarray:
        """``(len(contexts), vocab_size)`` next-token distributions after each prefix."""

    def next_token_topk(
        self, contexts: Sequence[np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most likely next tokens after each prefix and their probabilities.

        ``(ids, probs)``, each ``(len(contexts), k)``, most likely first. The default
        takes them from :meth:`next_token_probs`; priors with a cheaper way override it.
        """
        P = self.next_token_probs(contexts)
        k = min(k, P.shape[1])
        part = np.argpartition(-P, k - 1, axis=1)[:, :k]
        pv = np.take_along_axis(P, part, axis=1)
        o = np.argsort(-pv, axis=1, kind="stable")
        return np.take_along_axis(part, o, axis=1), np.take_along_axis(pv, o, axis=1)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for reports and provenance."""
        return {"kind": type(self).__name__, "vocab_size": self.vocab_size, "eot_id": self.eot_id}

    def sample(
        self,
        lengths: Sequence[int],
        *,
        rng: np.random.Generator,
        top_k: int | None = None,
        temperature: float = 1.0,
        batch_size: int = 256,
    ) -> list[np.ndarray]:
        """Purely synthetic documents of the given lengths (each ending with the EOT token).

        Tokens are drawn one at a time from the prior (optionally truncated to the
        ``top_k`` most likely and sharpened or flattened by ``temperature``); the
        EOT token is excluded until the last position, which is always EOT, so the
        sample has exactly the document lengths asked for.
        """
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0. Got {temperature} instead.")
        lens = np.asarray(lengths, dtype=np.int64)
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(lens)
        order = np.argsort(-lens, kind="stable")
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            L = int(lens[idx].max()) if len(idx) else 0
            seqs = np.zeros((len(idx), L), dtype=np.int64)
            for t in range(L):
                live = np.flatnonzero(lens[idx] - 1 > t)
                if live.size:
                    ctx = [seqs[r, :t] for r in live.tolist()]
                    if top_k is None:
                        w = self.next_token_probs(ctx)
                        w[:, self.eot_id] = 0.0
                        ids = None
                    else:
                        # the top-k among non-EOT tokens: take k + 1, drop EOT or the last
                        ids, w = self.next_token_topk(ctx, top_k + 1)
                        w = np.where(ids == self.eot_id, 0.0, w)
                        if ids.shape[1] > top_k:
                            drop = np.where((ids == self.eot_id).any(axis=1), -1, top_k)
                            w[np.arange(len(w)), drop] = np.where(drop >= 0, 0.0, w[:, -1])
                    w = apply_decoding(w, None, temperature)
                    cw = np.cumsum(w, axis=1)
                    u = rng.random(live.size) * cw[:, -1]
                    pick = np.minimum((cw <= u[:, None]).sum(axis=1), w.shape[1] - 1)
                    seqs[live, t] = pick if ids is None else ids[np.arange(live.size), pick]
                ends = np.flatnonzero(lens[idx] - 1 == t)
                seqs[ends, t] = self.eot_id
            for j, r in enumerate(idx.tolist()):
                out[r] = seqs[j, : lens[r]].copy()
        return out
