"""``TorchPrior``: any PyTorch causal LM that maps token ids to next-token logits."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from datafuel.errors import ConfigError, SchemaError

from ._prior import Prior, Scores

__all__ = ["TorchPrior"]


def _logits_of(out: Any) -> Any:
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


#: (doc index, input start, input end, first kept position) of one scoring window.
_Piece = tuple[int, int, int, int]
#: (positions, top-k ids, top-k probabilities) found in one window.
_Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def _scores(p: np.ndarray, cand: list[_Candidates], k: int) -> Scores:
    """One document's :class:`Scores` from its probabilities and its windows' candidates."""
    if not cand:
        return Scores(
            p=p,
            positions=np.zeros(0, np.int64),
            top_ids=np.zeros((0, k), np.int64),
            top_probs=np.zeros((0, k)),
        )
    pos = np.concatenate([c[0] for c in cand])
    o = np.argsort(pos, kind="stable")
    return Scores(
        p=p,
        positions=pos[o].astype(np.int64),
        top_ids=np.concatenate([c[1] for c in cand])[o],
        top_probs=np.concatenate([c[2] for c in cand])[o],
    )


class TorchPrior(Prior):
    """Wrap a causal LM ``model(ids: LongTensor[B, T]) -> logits[B, T, V']`` as a prior.

    The model is frozen (``eval()``, no gradients). Logits at position ``t`` must
    predict token ``t + 1`` (the usual causal-LM convention); Hugging Face outputs
    with a ``.logits`` attribute and ``(logits, ...)`` tuples are accepted. Only the
    first ``vocab_size`` logits are used (models often pad their vocabulary).

    Documents are scored in batches of similar length (right-padded; padding never
    influences earlier positions of a causal model) of at most ``batch_tokens``
    tokens, on ``device`` (``"cuda"`` when available and not given). Documents
    longer than ``max_context`` are scored in overlapping windows: each token is
    predicted with at least ``max_context // 2`` tokens of original prefix.

    Examples
    --------
    >>> import torch, numpy as np
    >>> class Bigram(torch.nn.Module):
    ...     def __init__(self): super().__init__(); self.emb = torch.nn.Embedding(16, 16)
    ...     def forward(self, ids): return self.emb(ids)
    >>> prior = TorchPrior(Bigram(), vocab_size=16, eot_id=0, device="cpu")
    >>> s = prior.score([np.array([3, 4, 5, 0])])[0]
    >>> s.p.shape, bool(((s.p > 0) & (s.p < 1)).all())
    ((4,), True)
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        vocab_size: int,
        eot_id: int,
        device: str | None = None,
        max_context: int | None = None,
        batch_tokens: int = 1 << 14,
        dtype: Any = None,
    ) -> None:
        import torch

        if vocab_size < 2 or not 0 <= eot_id < vocab_size:
            raise ConfigError(
                f"need vocab_size >= 2 and 0 <= eot_id < vocab_size. Got {vocab_size}, {eot_id}."
            )
        if max_context is not None and max_context < 2:
            raise ConfigError(f"max_context must be >= 2. Got {max_context} instead.")
        self.vocab_size = int(vocab_size)
        self.eot_id = int(eot_id)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model
        if isinstance(model, torch.nn.Module):
            model.eval().requires_grad_(False)
            model.to(self.device)
        self.max_context = max_context
        self.batch_tokens = int(batch_tokens)
        self.dtype = dtype

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": type(self.model).__name__,
            "device": str(self.device),
            "max_context": self.max_context,
        }

    def _forward(self, ids: Any) -> Any:
        import torch

        with torch.inference_mode():
            if self.dtype is not None and self.device.type == "cuda":
                with torch.autocast("cuda", dtype=self.dtype):
                    logits = _logits_of(self.model(ids))
            else:
                logits = _logits_of(self.model(ids))
        if logits.ndim != 3 or logits.shape[:2] != ids.shape:
            raise SchemaError(
                f"the model must return logits of shape (batch, time, vocab); got {tuple(logits.shape)} "
                f"for input {tuple(ids.shape)}."
            )
        if logits.shape[-1] < self.vocab_size:
            raise SchemaError(
                f"the model predicts {logits.shape[-1]} tokens but the data's vocabulary has "
                f"{self.vocab_size}; it cannot be a prior for these tokens."
            )
        return torch.softmax(logits[..., : self.vocab_size].float(), dim=-1)

    def _windows(self, n: int) -> list[tuple[int, int, int]]:
        """(input start, input end, first kept position) covering inputs [0, n).

        Each window after the first keeps only its last ``max_context - max_context // 2``
        positions, so every kept position sees at least ``max_context // 2`` tokens of prefix.
        """
        T = self.max_context
        if T is None or n <= T:
            return [(0, n, 0)]
        step = T - T // 2
        out = [(0, T, 0)]
        covered = T
        while covered < n:
            end = min(covered + step, n)
            out.append((end - T, end, covered))
            covered = end
        return out

    def score(
        self, docs: Sequence[np.ndarray], *, threshold: float = 0.99, top_k: int = 8
    ) -> list[Scores]:
        k = min(int(top_k), self.vocab_size)
        probs_of = [np.zeros(len(d), np.float64) for d in docs]
        cand: list[list[_Candidates]] = [[] for _ in docs]
        for batch, L in self._batches(self._pieces(docs)):
            self._score_batch(docs, batch, L, threshold, k, probs_of, cand)
        return [_scores(p, c, k) for p, c in zip(probs_of, cand, strict=True)]

    def _pieces(self, docs: Sequence[np.ndarray]) -> list[_Piece]:
        """(doc, input start, input end, first kept position) for every window of every doc."""
        pieces: list[_Piece] = []
        for i, d in enumerate(docs):
            for a, b, keep in self._windows(len(d)):
                pieces.append((i, a, b, keep))
        return pieces

    def _batches(self, pieces: list[_Piece]) -> Iterator[tuple[list[_Piece], int]]:
        """Pieces batched by length (shortest first), each batch at most ``batch_tokens``
        padded tokens; with the batch's padded length. Empty batches are skipped."""
        order = sorted(range(len(pieces)), key=lambda j: pieces[j][2] - pieces[j][1])
        j0 = 0
        while j0 < len(order):
            L = pieces[order[j0]][2] - pieces[order[j0]][1]
            j1 = j0 + 1
            while j1 < len(order):
                L1 = pieces[order[j1]][2] - pieces[order[j1]][1]
                if (j1 - j0 + 1) * L1 > self.batch_tokens:
                    break
                L = L1
                j1 += 1
            batch = [pieces[j] for j in order[j0:j1]]
            j0 = j1
            if L:
                yield batch, L

    def _score_batch(
        self,
        docs: Sequence[np.ndarray],
        batch: list[_Piece],
        L: int,
        threshold: float,
        k: int,
        probs_of: list[np.ndarray],
        cand: list[list[_Candidates]],
    ) -> None:
        """One forward pass: fill ``probs_of`` for the batch's kept positions and append
        the top-k of positions at or above ``threshold`` to ``cand``."""
        import torch

        ids = np.zeros((len(batch), L), np.int64)
        tgt = np.zeros_like(ids)
        for r, (i, a, b, _) in enumerate(batch):
            d = np.asarray(docs[i], np.int64)
            # inputs: the original prefix, i.e. [EOT] + doc shifted right by one
            ids[r, : b - a] = np.concatenate([[self.eot_id], d[:-1]])[a:b]
            tgt[r, : b - a] = d[a:b]
        P = self._forward(torch.from_numpy(ids).to(self.device))
        t = torch.from_numpy(tgt).to(self.device)
        pa = torch.gather(P, 2, t.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
        mask = np.zeros_like(ids, dtype=bool)
        for r, (i, a, b, keep) in enumerate(batch):
            probs_of[i][keep:b] = pa[r, keep - a : b - a]
            m = pa[r, keep - a : b - a] >= threshold
            pos = np.arange(keep, b)[m]
            pos = pos[pos >= 1]
            mask[r, pos - a] = True
        if not mask.any():
            return
        rr, cc = np.nonzero(mask)
        sel = P[torch.from_numpy(rr).to(self.device), torch.from_numpy(cc).to(self.device)]
        tp, ti = torch.topk(sel, k, dim=-1)
        tp_np, ti_np = tp.double().cpu().numpy(), ti.cpu().numpy().astype(np.int64)
        for r in np.unique(rr).tolist():
            i, a = batch[r][0], batch[r][1]
            s = rr == r
            cand[i].append((cc[s] + a, ti_np[s], tp_np[s]))

    def next_token_probs(self, contexts: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if not contexts:
            return np.zeros((0, self.vocab_size))
        T = self.max_context
        rows = []
        for ctx in contexts:
            c = np.concatenate([[self.eot_id], np.asarray(ctx, np.int64)])
            rows.append(c[-T:] if T is not None else c)
        L = max(len(r) for r in rows)
        ids = np.zeros((len(rows), L), np.int64)
        last = np.zeros(len(rows), np.int64)
        for r, c in enumerate(rows):
            ids[r, : len(c)] = c
            last[r] = len(c) - 1
        P = self._forward(torch.from_numpy(ids).to(self.device))
        sel = P[torch.arange(len(rows), device=self.device), torch.from_numpy(last).to(self.device)]
        return sel.double().cpu().numpy()
