"""``NGramPrior``: an interpolated absolute-discounting n-gram model, vectorised in numpy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from datafuel.errors import ConfigError, InputDataError

from ._prior import Prior, Scores

__all__ = ["NGramPrior"]

_MIX = np.uint64(0x9E3779B97F4A7C15)


def _doc_stream(docs: Sequence[np.ndarray], eot: int) -> tuple[np.ndarray, np.ndarray]:
    """``[EOT] + doc`` for each doc, concatenated; and the stream index of each doc's first token."""
    lens = np.fromiter((len(d) for d in docs), np.int64, count=len(docs))
    starts = np.cumsum(lens + 1) - lens  # index of each doc's first token
    s = np.full(int(lens.sum() + len(docs)), eot, dtype=np.int64)
    for d, a in zip(docs, starts.tolist(), strict=True):
        s[a : a + len(d)] = d
    return s, starts


def _available(s: np.ndarray, eot: int) -> np.ndarray:
    """For each stream position j: tokens back to (and including) the most recent EOT before j."""
    n = len(s)
    pos = np.arange(n, dtype=np.int64)
    mark = np.where(s == eot, pos, -1)
    last = np.maximum.accumulate(mark)  # last EOT at or before j
    prev = np.empty(n, np.int64)
    prev[0] = -1
    prev[1:] = last[:-1]  # last EOT strictly before j
    return np.where(prev >= 0, pos - prev, 0)


def _chunks(docs: Iterable[np.ndarray], chunk_tokens: int) -> Iterator[list[np.ndarray]]:
    """The documents as arrays, grouped into lists of at least ``chunk_tokens`` tokens (the last may be short)."""
    chunk: list[np.ndarray] = []
    size = 0
    for d in docs:
        a = np.asarray(d)
        chunk.append(a)
        size += len(a)
        if size >= chunk_tokens:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _count_table(parts: list[tuple[np.ndarray, np.ndarray]], V: int) -> dict[str, np.ndarray]:
    """One order's sorted joint keys and counts (chunks merged) plus per-context totals."""
    keys = np.concatenate([p[0] for p in parts])
    cnts = np.concatenate([p[1] for p in parts])
    if len(parts) > 1:
        o = np.argsort(keys, kind="stable")
        keys, cnts = keys[o], cnts[o]
        first = np.concatenate([[True], keys[1:] != keys[:-1]])
        starts = np.flatnonzero(first)
        keys, cnts = keys[starts], np.add.reduceat(cnts, starts)
    ctx = keys // np.uint64(V)
    hk, hstart, hdistinct = np.unique(ctx, return_index=True, return_counts=True)
    htotal = np.add.reduceat(cnts, hstart) if len(cnts) else np.zeros(0, np.int64)
    return {
        "joint": keys,
        "count": cnts,
        "ctx": hk,
        "ctx_total": htotal.astype(np.int64),
        "ctx_distinct": hdistinct.astype(np.int64),
    }


def _discount(counts: np.ndarray) -> float:
    """Ney's absolute discount ``n1 / (n1 + 2 n2)``, kept within [0.05, 0.95] (0.5 without data)."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 + n2 else 0.5


class NGramPrior(Prior):
    """Interpolated absolute-discounting n-gram prior over token ids (Ney, Essen & Kneser 1994).

    ``P_c(w|h) = max(n(h,w) - D_c, 0) / n(h) + D_c * N1+(h·) / n(h) * P_{c-1}(w|h')``,
    bottoming out in an add-``alpha`` unigram, so every token has a non-zero
    probability and each order's distribution sums to one. ``D_c`` is Ney's estimate
    ``n1 / (n1 + 2 n2)`` per order. Contexts never reach back past the start of a
    document (documents are read as preceded by the EOT token).

    Counts live in sorted ``uint64`` key arrays — context key ``h`` packs the context
    tokens base ``V`` (hashed when ``V**order`` overflows 63 bits), joint key
    ``h * V + w`` — so every lookup is a vectorised ``np.searchsorted`` and the
    followers of a context are one contiguous run. Fitted state is a handful of
    arrays (``to_arrays``/``from_arrays``: ``.npz``-able, no pickle).

    Examples
    --------
    >>> import numpy as np
    >>> docs = [np.array([5, 6, 7, 0])] * 50 + [np.array([5, 6, 8, 0])]
    >>> prior = NGramPrior.fit(docs, vocab_size=16, eot_id=0, order=3)
    >>> s = prior.score([np.array([5, 6, 7, 0])], threshold=0.9)[0]
    >>> s.positions.tolist()  # the first token is never a candidate
    [1, 2, 3]
    >>> s.top_ids[1][:2].tolist()  # after 5 6: mostly 7, sometimes 8
    [7, 8]
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        eot_id: int,
        order: int,
        unigram: np.ndarray,
        tables: list[dict[str, np.ndarray]],
        discounts: Sequence[float],
        hashed: bool,
        num_tokens: int,
    ) -> None:
        self.vocab_size = int(vocab_size)
        self.eot_id = int(eot_id)
        self.order = int(order)
        self.unigram = unigram
        self.tables = tables
        self.discounts = [float(d) for d in discounts]
        self.hashed = bool(hashed)
        self.num_tokens = int(num_tokens)
        self._top1: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- fitting ----------------------------------------------------------------------
    @staticmethod
    def _check(vocab_size: int, eot_id: int, order: int) -> bool:
        if not isinstance(order, int) or order < 1 or order > 8:
            raise ConfigError(f"order must be an int in [1, 8]. Got {order!r} instead.")
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2. Got {vocab_size} instead.")
        if not 0 <= eot_id < vocab_size:
            raise ConfigError(f"eot_id must be in [0, {vocab_size}). Got {eot_id} instead.")
        return float(vocab_size) ** order >= 2.0**63

    @classmethod
    def fit(
        cls,
        docs: Iterable[np.ndarray],
        *,
        vocab_size: int,
        eot_id: int,
        order: int = 3,
        alpha: float = 0.1,
        chunk_tokens: int = 1 << 22,
        hash_contexts: bool | None = None,
    ) -> NGramPrior:
        """Count n-grams of the documents (streamed in chunks of ``chunk_tokens``).

        ``hash_contexts``: ``None`` packs contexts exactly when ``vocab_size ** order``
        fits in 63 bits and hashes them otherwise; ``True`` forces hashing.
        """
        hashed = cls._check(vocab_size, eot_id, order) or bool(hash_contexts)
        V = int(vocab_size)
        uni = np.zeros(V, np.int64)
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(order - 1)]
        total = 0
        for chunk in _chunks(docs, chunk_tokens):
            total += cls._count_chunk(chunk, eot_id, order, V, hashed, uni, parts)
        if total == 0:
            raise InputDataError("cannot fit an n-gram prior on no tokens.")
        tables: list[dict[str, np.ndarray]] = []
        discounts: list[float] = []
        for order_parts in parts:
            table = _count_table(order_parts, V)
            tables.append(table)
            discounts.append(_discount(table["count"]))
        unigram = (uni + alpha) / (total + alpha * V)
        return cls(
            vocab_size=V,
            eot_id=eot_id,
            order=order,
            unigram=unigram,
            tables=tables,
            discounts=discounts,
            hashed=hashed,
            num_tokens=total,
        )

    @classmethod
    def _count_chunk(
        cls,
        chunk: list[np.ndarray],
        eot_id: int,
        order: int,
        V: int,
        hashed: bool,
        uni: np.ndarray,
        parts: list[list[tuple[np.ndarray, np.ndarray]]],
    ) -> int:
        """Add one chunk's unigram counts to ``uni`` and its n-gram counts to ``parts``.

        Returns the number of predicted tokens in the chunk.
        """
        s, starts = _doc_stream(chunk, eot_id)
        if s.size and (s.max() >= V or s.min() < 0):
            bad = int(s[(s >= V) | (s < 0)][0])
            raise InputDataError(
                f"token id {bad} is outside the vocabulary [0, {V}) given to the n-gram prior."
            )
        pred = np.ones(len(s), bool)
        pred[starts - 1] = False  # the inserted start-of-document EOTs are not predictions
        uni[:] += np.bincount(s[pred], minlength=V)
        avail = _available(s, eot_id)
        key = np.zeros(len(s), np.uint64)
        for c in range(1, order):
            key = cls._extend(key, s, c, V, hashed)
            ok = pred & (avail >= c)
            joint = key[ok] * np.uint64(V) + s[ok].astype(np.uint64)
            u, n = np.unique(joint, return_counts=True)
            parts[c - 1].append((u, n.astype(np.int64)))
        return int(pred.sum())

    @staticmethod
    def _extend(key: np.ndarray, s: np.ndarray, c: int, V: int, hashed: bool) -> np.ndarray:
        """Context keys of length ``c`` from those of length ``c - 1`` (token ``c`` back added)."""
        prev = np.zeros(len(s), np.uint64)
        prev[c:] = s[:-c].astype(np.uint64) if c < len(s) else 0
        if not hashed:
            return key + prev * np.uint64(V) ** np.uint64(c - 1)
        limit = np.uint64((2**64 - 1) // V)  # joint keys h * V + w must not overflow
        with np.errstate(over="ignore"):
            h = (key ^ (prev + np.uint64(1))) * _MIX
            h ^= h >> np.uint64(31)
        return h % limit

    # -- persistence (no pickle) --------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as plain arrays (save with ``np.savez``; load with ``allow_pickle=False``)."""
        out: dict[str, np.ndarray] = {
            "meta": np.array(
                [self.vocab_size, self.eot_id, self.order, int(self.hashed), self.num_tokens],
                np.int64,
            ),
            "unigram": self.unigram,
            "discounts": np.array(self.discounts, np.float64),
        }
        for c, t in enumerate(self.tables, start=1):
            for k, v in t.items():
                out[f"o{c}_{k}"] = v
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> NGramPrior:
        meta = [int(x) for x in arrays["meta"]]
        order = meta[2]
        keys = ("joint", "count", "ctx", "ctx_total", "ctx_distinct")
        tables = [{k: np.asarray(arrays[f"o{c}_{k}"]) for k in keys} for c in range(1, order)]
        return cls(
            vocab_size=meta[0],
            eot_id=meta[1],
            order=order,
            unigram=np.asarray(arrays["unigram"]),
            tables=tables,
            discounts=[float(x) for x in arrays["discounts"]],
            hashed=bool(meta[3]),
            num_tokens=meta[4],
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "order": self.order,
            "smoothing": "interpolated absolute discounting",
            "discounts": [round(d, 4) for d in self.discounts],
            "fitted_tokens": self.num_tokens,
            "ngrams": [len(t["joint"]) for t in self.tables],
            "hashed_contexts": self.hashed,
        }

    # -- lookups ---------------------------------------------------------------------------
    def _lookup(self, c: int, keys: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index into order ``c``'s context table and whether the context was seen."""
        t = self.tables[c - 1]
        hk = t["ctx"]
        if hk.size == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        i = np.searchsorted(hk, keys)
        i = np.minimum(i, hk.size - 1)
        return i, valid & (hk[i] == keys)

    def _prob_of(self, keys: list[np.ndarray], avail: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Interpolated P(w | context) for aligned arrays of context keys (per order) and tokens."""
        V = np.uint64(self.vocab_size)
        p = self.unigram[w]
        wu = w.astype(np.uint64)
        for c in range(1, self.order):
            t = self.tables[c - 1]
            hi, found = self._lookup(c, keys[c - 1], avail >= c)
            if not found.any():
                continue
            sel = np.flatnonzero(found)
            h = keys[c - 1][sel]
            joint = h * V + wu[sel]
            J = t["joint"]
            ji = np.minimum(np.searchsorted(J, joint), J.size - 1)
            cnt = np.where(J[ji] == joint, t["count"][ji], 0)
            D = self.discounts[c - 1]
            tot = t["ctx_total"][hi[sel]]
            dist = t["ctx_distinct"][hi[sel]]
            p[sel] = (np.maximum(cnt - D, 0.0) + D * dist * p[sel]) / tot
        return p

    def _dense(
        self, keys: list[np.ndarray], avail: np.ndarray, max_context: int | None = None
    ) -> np.ndarray:
        """Full next-token distributions ``(rows, V)`` for rows of context keys.

        ``max_context`` limits the context length used (``1``: the order-1 distribution).
        """
        V = self.vocab_size
        rows = len(avail)
        P = np.broadcast_to(self.unigram, (rows, V)).copy()
        for c in range(1, self.order if max_context is None else max_context + 1):
            t = self.tables[c - 1]
            hi, found = self._lookup(c, keys[c - 1], avail >= c)
            sel = np.flatnonzero(found)
            if sel.size == 0:
                continue
            D = self.discounts[c - 1]
            tot = t["ctx_total"][hi[sel]].astype(np.float64)
            dist = t["ctx_distinct"][hi[sel]]
            P[sel] *= (D * dist / tot)[:, None]
            h = keys[c - 1][sel]
            J = t["joint"]
            lo = np.searchsorted(J, h * np.uint64(V))
            up = np.searchsorted(J, (h + np.uint64(1)) * np.uint64(V))
            lens = up - lo
            n = int(lens.sum())
            if n == 0:
                continue
            r = np.repeat(np.arange(sel.size), lens)
            j = np.arange(n) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
            wids = (J[j] - h[r] * np.uint64(V)).astype(np.int64)
            P[sel[r], wids] += np.maximum(t["count"][j] - D, 0.0) / tot[r]
        return P

    def _keys(self, s: np.ndarray) -> list[np.ndarray]:
        key = np.zeros(len(s), np.uint64)
        out = []
        for c in range(1, self.order):
            key = self._extend(key, s, c, self.vocab_size, self.hashed)
            out.append(key)
        return out

    # -- the Prior interface --------------------------------------------------------------
    def score(
        self,
        docs: Sequence[np.ndarray],
        *,
        threshold: float = 0.99,
        top_k: int = 8,
        block_cells: int = 1 << 22,
    ) -> list[Scores]:
        """Teacher-forced ``P(x_i | x_<i)`` for every token; top-k only where it is >= ``threshold``."""
        if not docs:
            return []
        k = min(int(top_k), self.vocab_size)
        s, starts = _doc_stream(docs, self.eot_id)
        if s.size and (s.max() >= self.vocab_size or s.min() < 0):
            raise InputDataError(
                f"token id {int(s.max())} is outside the prior's vocabulary [0, {self.vocab_size})."
            )
        avail = _available(s, self.eot_id)
        keys = self._keys(s)
        p_all = self._prob_of(keys, avail, s)
        lens = np.fromiter((len(d) for d in docs), np.int64, count=len(docs))
        # candidates: p >= threshold, not the first token of a document
        first = np.zeros(len(s), bool)
        first[starts - 1] = True  # the inserted EOTs
        first[starts[lens > 0]] = True
        cand = np.flatnonzero((p_all >= threshold) & ~first)
        top_ids = np.zeros((cand.size, k), np.int64)
        top_p = np.zeros((cand.size, k), np.float64)
        step = max(1, block_cells // (8 * k))
        for a in range(0, cand.size, step):
            rows = cand[a : a + step]
            ids, pr = self._top_k([kk[rows] for kk in keys], avail[rows], k)
            top_ids[a : a + step] = ids
            top_p[a : a + step] = pr
        doc_of = np.searchsorted(starts, cand, side="right") - 1
        bounds = np.searchsorted(doc_of, np.arange(len(docs) + 1))
        out = []
        for i, a in enumerate(starts.tolist()):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            out.append(
                Scores(
                    p=p_all[a : a + lens[i]].copy(),
                    positions=cand[lo:hi] - a,
                    top_ids=top_ids[lo:hi],
                    top_probs=top_p[lo:hi],
                )
            )
        return out

    # -- exact top-k without dense rows ------------------------------------------------------
    def _order1_top(self, k: int, ctx_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids of the order-1 distribution for order-1 context rows (cached per k).

        Row ``-1`` (no order-1 context) is the unigram's top-k.
        """
        cache = self._top1.get(k)
        n_ctx = len(self.tables[0]["ctx"]) if self.tables else 0
        if cache is None:
            uni_top = np.argsort(-self.unigram, kind="stable")[:k]
            cache = (np.full((n_ctx + 1, k), -1, np.int64), np.zeros(n_ctx + 1, bool))
            cache[0][n_ctx] = uni_top
            cache[1][n_ctx] = True
            self._top1[k] = cache
        table, done = cache
        rows = np.where(ctx_rows < 0, n_ctx, ctx_rows)
        todo = np.unique(rows[~done[rows]])
        step = max(1, (1 << 22) // self.vocab_size)
        for a in range(0, todo.size, step):
            r = todo[a : a + step]
            keys = [self.tables[0]["ctx"][r]] + [np.zeros(len(r), np.uint64)] * (self.order - 2)
            P = self._dense(keys, np.ones(len(r), np.int64), max_context=1)
            part = np.argpartition(-P, k - 1, axis=1)[:, :k]
            table[r] = part
            done[r] = True
        return table[rows], rows

    def _top_k(
        self, keys: list[np.ndarray], avail: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of the interpolated distribution at each row, most likely first.

        The top-k of ``P_c = a_c + beta_c * P_{c-1}`` lies in the followers of the
        order-c context plus the top-k of ``P_{c-1}`` (a word that follows no longer
        context scores ``beta * P_{c-1}``, below k words that do at least as well), so
        the candidates are the followers of every context of order >= 2 plus the
        cached top-k of the order-1 distribution; each candidate is scored exactly.
        """
        V = self.vocab_size
        rows = len(avail)
        if k >= V or self.order == 1:
            if self.order == 1:
                base = np.tile(np.argsort(-self.unigram, kind="stable")[:k], (rows, 1))
            else:
                base = np.tile(np.arange(V), (rows, 1))
            pr_rows = np.repeat(np.arange(rows), base.shape[1])
            pr_w = base.reshape(-1)
        else:
            hi, found = self._lookup(1, keys[0], avail >= 1)
            base, _ = self._order1_top(k, np.where(found, hi, -1))
            rows_parts = [np.repeat(np.arange(rows), k)]
            w_parts = [base.reshape(-1)]
            for c in range(2, self.order):
                t = self.tables[c - 1]
                _, f = self._lookup(c, keys[c - 1], avail >= c)
                sel = np.flatnonzero(f)
                if sel.size == 0:
                    continue
                h = keys[c - 1][sel]
                J = t["joint"]
                lo = np.searchsorted(J, h * np.uint64(V))
                up = np.searchsorted(J, (h + np.uint64(1)) * np.uint64(V))
                lens = up - lo
                n = int(lens.sum())
                r = np.repeat(np.arange(sel.size), lens)
                j = np.arange(n) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
                rows_parts.append(sel[r])
                w_parts.append((J[j] - h[r] * np.uint64(V)).astype(np.int64))
            pair = np.sort(np.concatenate(rows_parts) * V + np.concatenate(w_parts))
            pair = pair[
                np.concatenate([[True], pair[1:] != pair[:-1]])
            ]  # dedupe (faster than np.unique)
            pr_rows, pr_w = pair // V, pair % V
        p = self._prob_of([kk[pr_rows] for kk in keys], avail[pr_rows], pr_w)
        o = np.lexsort((pr_w, -p, pr_rows))
        pr_rows, pr_w, p = pr_rows[o], pr_w[o], p[o]
        first = np.searchsorted(pr_rows, np.arange(rows))
        take = first[:, None] + np.arange(k)[None, :]
        return pr_w[take], p[take]

    def _context_keys(self, contexts: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Per-order context keys and available context lengths for arbitrary prefixes."""
        m = self.order - 1
        rows = len(contexts)
        # each row: [EOT] + the last m tokens of its context, right-aligned, then a dummy slot
        s = np.full((rows, m + 2), self.eot_id, np.int64)
        avail = np.zeros(rows, np.int64)
        for r, ctx in enumerate(contexts):
            tail = np.asarray(ctx[-m:] if m else ctx[:0], dtype=np.int64)
            if len(tail):
                s[r, m + 1 - len(tail) : m + 1] = tail
            avail[r] = min(len(ctx), m) + 1
        keys = self._keys(s.reshape(-1))
        last = np.arange(rows) * (m + 2) + (m + 1)  # the dummy slot: keys = the context before it
        return [kk[last] for kk in keys], avail

    def next_token_probs(self, contexts: Sequence[np.ndarray]) -> np.ndarray:
        if not contexts:
            return np.zeros((0, self.vocab_size))
        keys, avail = self._context_keys(contexts)
        return self._dense(keys, avail)

    def next_token_topk(
        self, contexts: Sequence[np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(int(k), self.vocab_size)
        if not contexts:
            return np.zeros((0, k), np.int64), np.zeros((0, k))
        keys, avail = self._context_keys(contexts)
        return self._top_k(keys, avail, k)
