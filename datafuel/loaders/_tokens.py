"""``TokenStream``: a ragged token field read as one flat stream of windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

__all__ = ["TokenStream"]


class TokenStream:
    """Documents of tokens, concatenated in storage order, sampled as windows.

    A training sample for a causal LM is a window of ``seq_len + 1`` consecutive
    tokens (inputs are ``w[:-1]``, targets ``w[1:]``). Windows may cross document
    boundaries (the text stage puts an end-of-document token between documents) and
    shard boundaries.

    Parameters
    ----------
    data, offsets
        Per shard, the memory-mapped token array and its ``rows + 1`` offsets.
    """

    def __init__(
        self, data: Sequence[np.ndarray], offsets: Sequence[np.ndarray], dtype: np.dtype[Any]
    ) -> None:
        self._data = list(data)
        self.dtype = dtype
        sizes = np.array([len(d) for d in self._data], dtype=np.int64)
        #: global token index where each shard starts, plus the total
        self.shard_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        docs = [
            np.asarray(o[:-1], dtype=np.int64) + s
            for o, s in zip(offsets, self.shard_starts[:-1], strict=True)
        ]
        #: global token index where each document starts, plus the total
        self.doc_starts = np.concatenate([*docs, self.shard_starts[-1:]]).astype(np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.shard_starts[-1])

    @property
    def num_documents(self) -> int:
        return len(self.doc_starts) - 1

    def __len__(self) -> int:
        return self.num_tokens

    def num_windows(self, length: int) -> int:
        """How many distinct window starts fit: ``num_tokens - length + 1`` (0 if too short)."""
        return max(0, self.num_tokens - length + 1)

    def windows(
        self, starts: Sequence[int] | np.ndarray, length: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Windows ``[s, s + length)`` for each start, as a ``(len(starts), length)`` array."""
        st = np.asarray(starts, dtype=np.int64).reshape(-1)
        if length < 1:
            raise ConfigError(f"window length must be >= 1. Got {length} instead.")
        if st.size and (st.min() < 0 or st.max() + length > self.num_tokens):
            raise IndexError(
                f"window start out of range: windows of {length} tokens start in [0, {self.num_tokens - length}]."
            )
        if out is None:
            out = np.empty((st.size, length), dtype=self.dtype)
        elif out.shape != (st.size, length):
            raise ConfigError(f"out must have shape {(st.size, length)}; got {out.shape}.")
        if st.size == 0:
            return out
        shard = np.searchsorted(self.shard_starts, st, side="right") - 1
        inside = st + length <= self.shard_starts[shard + 1]
        for k in np.unique(shard[inside]).tolist():
            # fancy indexing a sliding-window view copies each window as one contiguous run
            # (np.take would first materialise the whole view)
            view = np.lib.stride_tricks.sliding_window_view(self._data[k], length)
            sel = np.flatnonzero(inside & (shard == k))
            if sel.size == st.size:
                out[...] = view[st - self.shard_starts[k]]
            else:
                out[sel] = view[st[sel] - self.shard_starts[k]]
        for j in np.flatnonzero(~inside).tolist():  # windows that cross a shard boundary
            out[j] = self.read(int(st[j]), length)
        return out

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as a new array (may cross shards)."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(
                f"tokens [{start}, {start + length}) out of range [0, {self.num_tokens})."
            )
        pieces = []
        pos, end = start, start + length
        while pos < end:
            k = int(np.searchsorted(self.shard_starts, pos, side="right") - 1)
            a = pos - int(self.shard_starts[k])
            b = min(end, int(self.shard_starts[k + 1])) - int(self.shard_starts[k])
            pieces.append(self._data[k][a:b])
            pos += b - a
        return (
            np.concatenate(pieces).astype(self.dtype, copy=False)
            if pieces
            else np.zeros(0, self.dtype)
        )

    def document(self, i: int) -> np.ndarray:
        """Tokens of document ``i``."""
        a, b = int(self.doc_starts[i]), int(self.doc_starts[i + 1])
        return self.read(a, b - a)
