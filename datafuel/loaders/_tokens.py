"""``TokenStream``: a ragged token field read as one flat stream of windows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

try:  # the one-pass native gather (optional C extension, see _gather.c)
    from . import _gather
except ImportError:  # pragma: no cover - exercised by the fallback test's monkeypatch
    _gather = None  # type: ignore[assignment]

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
    sizes, load, load_offsets
        A *lazy* stream (a remote set's, :meth:`RemoteShardSet.lazy_token_stream`):
        ``sizes`` are the tokens of each shard (from the manifest), ``data`` entries may
        be ``b""`` (not mapped) and ``load(k)`` maps shard ``k`` when a read needs it;
        :meth:`drop` forgets a mapping again (so that its file may be evicted).
        ``offsets`` may then be ``None``: ``load_offsets(k)`` reads shard ``k``'s
        offsets the first time :attr:`doc_starts` is asked for.

    A lazy stream also keeps *heads* (:meth:`keep_heads`): a copy of the first tokens of
    each shard, taken while the shard is mapped (:meth:`capture_head`) and kept when its
    mapping is dropped, so that a window running from one shard into the next reads the
    next one's part from its head instead of needing that whole shard again.
    """

    def __init__(
        self,
        data: Sequence[np.ndarray | bytes],
        offsets: Sequence[np.ndarray] | None,
        dtype: np.dtype[Any],
        *,
        sizes: Sequence[int] | np.ndarray | None = None,
        load: Callable[[int], np.ndarray] | None = None,
        load_offsets: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self._data: list[Any] = list(data)
        self._views: dict[tuple[int, int], np.ndarray] = {}
        self._load = load
        self.dtype = dtype
        if sizes is None:
            sizes = np.array([len(d) for d in self._data], dtype=np.int64)
        sizes = np.asarray(sizes, dtype=np.int64)
        #: tokens of each shard
        self.sizes = sizes
        #: global token index where each shard starts, plus the total
        self.shard_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._offsets = None if offsets is None else list(offsets)
        self._load_offsets = load_offsets
        self._doc_starts: np.ndarray | None = None
        if self._offsets is not None:
            self._doc_starts = self._starts_of(self._offsets)
        #: tokens each head holds (0: no heads kept)
        self.head_tokens = 0
        #: shard -> copy of its first ``min(head_tokens, sizes[k])`` tokens
        self.heads: dict[int, np.ndarray] = {}

    def _starts_of(self, offsets: Sequence[np.ndarray]) -> np.ndarray:
        docs = [
            np.asarray(o[:-1], dtype=np.int64) + s
            for o, s in zip(offsets, self.shard_starts[:-1], strict=True)
        ]
        return np.concatenate([*docs, self.shard_starts[-1:]]).astype(np.int64)

    @property
    def doc_starts(self) -> np.ndarray:
        """Global token index where each document starts, plus the total."""
        if self._doc_starts is None:
            assert self._load_offsets is not None
            n = len(self.sizes)
            self._doc_starts = self._starts_of([self._load_offsets(k) for k in range(n)])
        return self._doc_starts

    @property
    def lazy(self) -> bool:
        """Whether shards are mapped as reads need them (and may be dropped again)."""
        return self._load is not None

    def _shard(self, k: int) -> np.ndarray:
        """Shard ``k``'s tokens, mapped first if a lazy stream has not mapped it."""
        d = self._data[k]
        if self._load is not None and len(d) < self.sizes[k]:
            d = self._data[k] = self._load(k)
        if isinstance(d, bytes):  # an empty shard, never mapped
            return np.zeros(0, self.dtype)
        return d  # type: ignore[no-any-return]

    def drop(self, k: int) -> None:
        """Forget shard ``k``'s mapping (a lazy stream maps it again when read)."""
        if self._load is None:
            return
        self._data[k] = b""
        for key in [key for key in list(self._views) if key[0] == k]:
            self._views.pop(key, None)

    # -- heads (a lazy stream's windows across shard boundaries) ------------------------
    def keep_heads(self, tokens: int) -> None:
        """Keep the first ``tokens`` tokens of each shard as it is captured (the most any
        caller asked for: a head that long serves windows of fewer tokens too). Heads
        stay for the stream's life: ``tokens / shard tokens`` of the field in memory."""
        if self._load is not None:
            self.head_tokens = max(self.head_tokens, int(tokens))

    def _head_len(self, k: int) -> int:
        return min(self.head_tokens, int(self.sizes[k]))

    def capture_head(self, k: int) -> None:
        """Copy shard ``k``'s head, mapping it first (the caller holds it pinned), unless
        a long enough one is kept already."""
        if not self.head_tokens:
            return
        n = self._head_len(k)
        head = self.heads.get(k)
        if head is None or head.size < n:
            self.heads[k] = np.array(self._shard(k)[:n]) if n else np.zeros(0, self.dtype)

    def heads_kept(self) -> np.ndarray:
        """Per shard, whether its head is kept at the full :attr:`head_tokens` (or the
        whole shard, when it is shorter)."""
        kept = np.zeros(len(self.sizes), bool)
        for k, head in list(self.heads.items()):
            kept[k] = head.size >= self._head_len(k)
        return kept

    def windows_from_heads(self, starts: np.ndarray, length: int, out: np.ndarray) -> None:
        """Windows ``[s, s + length)`` into ``out``'s rows, each read from the shard its
        start lies in (mapped: the caller holds it pinned) and, where it runs into the
        next shards, from their heads (at most ``length - 1`` tokens of each); a window
        whose heads are not kept is read whole (mapping what it needs)."""
        bounds = self.shard_starts
        for j, s in enumerate(starts.tolist()):
            k = int(np.searchsorted(bounds, s, side="right") - 1)
            a = s - int(bounds[k])
            parts = [self._shard(k)[a : a + length]]
            got, m = parts[0].size, k + 1
            while got < length:
                need = min(length - got, int(self.sizes[m]))
                head = self.heads.get(m)
                if need and (head is None or head.size < need):
                    parts = [self.read(s, length)]
                    break
                if need:
                    parts.append(head[:need])  # type: ignore[index]
                got += need
                m += 1
            out[j] = parts[0] if len(parts) == 1 else np.concatenate(parts)

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

    def _view(self, k: int, length: int) -> np.ndarray | None:
        """Shard ``k`` seen as its ``(n, length)`` sliding windows (a cached strided view)."""
        key = (k, length)
        view = self._views.get(key)
        if view is None:
            data = self._shard(k)
            n = len(data) - length + 1
            if n <= 0:
                return None
            step = data.strides[0]
            view = np.lib.stride_tricks.as_strided(
                data, shape=(n, length), strides=(step, step), writeable=False
            )
            self._views[key] = view  # a racing thread builds an identical view: harmless
        return view

    def windows(
        self, starts: Sequence[int] | np.ndarray, length: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Windows ``[s, s + length)`` for each start, as a ``(len(starts), length)`` array.

        ``out`` may have a wider dtype (e.g. int64): the tokens are then widened as
        they are copied, with no second pass.
        """
        st = np.asarray(starts, dtype=np.int64).reshape(-1)
        if length < 1:
            raise ConfigError(f"window length must be >= 1. Got {length} instead.")
        if out is None:
            out = np.empty((st.size, length), dtype=self.dtype)
        elif out.shape != (st.size, length):
            raise ConfigError(f"out must have shape {(st.size, length)}; got {out.shape}.")
        if st.size == 0:
            return out
        if (
            _gather is not None
            and out.flags.c_contiguous
            and out.dtype.kind in "iu"
            and out.dtype.itemsize >= self.dtype.itemsize
        ):
            # range checks, shard lookup and copy (across shard boundaries too) in one
            # native pass straight into the rows: the Python around a copy of 64 windows
            # (reductions, searchsorted, index arithmetic) cost as much as the copy
            if not st.flags.c_contiguous:
                st = np.ascontiguousarray(st)
            self._windows_native(st, length, out)
            return out
        return self._windows_numpy(st, length, out)

    def _windows_native(
        self, st: np.ndarray, length: int, out: np.ndarray, fields: tuple[Any, ...] | None = None
    ) -> None:
        """One ``_gather.windows_at`` into ``out``, mapping each shard it finds unmapped
        (with ``fields``, the windows' document fields written in the same call)."""
        assert _gather is not None
        seen: set[int] = set()  # shards this call found mapped (or mapped itself)
        while (
            status := _gather.windows_at(
                self._data, self.shard_starts, st, length, out, self.dtype.itemsize, fields
            )
        ) is not None:
            if isinstance(status, int):
                raise IndexError(
                    f"window start out of range: windows of {length} tokens start in "
                    f"[0, {self.num_tokens - length}]; got {int(st[status])}."
                )
            k = int(status[0])  # a shard not mapped yet: map it and call again
            if self._load is None or k in seen:
                raise ValueError(
                    f"shard {k} holds no tokens, fewer than its offsets say ({int(self.sizes[k])})"
                )
            seen.add(k)
            # another worker may have mapped it since windows_at looked: then just call again
            self._shard(k)

    def _windows_numpy(self, st: np.ndarray, length: int, out: np.ndarray) -> np.ndarray:
        """:meth:`windows` without the extension (or into a strided or float ``out``)."""
        lo, hi = int(st.min()), int(st.max())
        if lo < 0 or hi + length > self.num_tokens:
            raise IndexError(
                f"window start out of range: windows of {length} tokens start in [0, {self.num_tokens - length}]."
            )
        starts_ = self.shard_starts
        k = int(np.searchsorted(starts_, lo, side="right") - 1)
        if hi + length <= starts_[k + 1]:
            # every window inside one shard (always so with one shard): one fancy-index
            # copy of contiguous runs (np.take would first materialise the whole view)
            view = self._view(k, length)
            assert view is not None
            out[...] = view[st - starts_[k]] if k else view[st]
            return out
        shard = np.searchsorted(starts_, st, side="right") - 1
        inside = st + length <= starts_[shard + 1]
        for k in np.unique(shard[inside]).tolist():
            view = self._view(k, length)
            assert view is not None
            sel = np.flatnonzero(inside & (shard == k))
            out[sel] = view[st[sel] - starts_[k]]
        for j in np.flatnonzero(~inside).tolist():  # windows that cross a shard boundary
            out[j] = self.read(int(st[j]), length)
        return out

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Tokens at the global ``positions`` (any order, may cross shards), as a new array."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size == 0:
            return np.zeros(0, self.dtype)
        if int(pos.min()) < 0 or int(pos.max()) >= self.num_tokens:
            raise IndexError(f"token positions out of range [0, {self.num_tokens}).")
        if len(self._data) == 1:
            return np.asarray(self._shard(0)[pos])
        shard = np.searchsorted(self.shard_starts, pos, side="right") - 1
        out = np.empty(pos.size, self.dtype)
        for k in np.unique(shard).tolist():
            sel = shard == k
            out[sel] = self._shard(k)[pos[sel] - self.shard_starts[k]]
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
            pieces.append(self._shard(k)[a:b])
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
