"""Token windows of one epoch for causal-LM training, with optional document fields.

Sampling (also in FORMAT.md, "Sampling"): an epoch of a stream of ``N`` tokens with
``seq_len = T`` has ``n = (N - 1) // T`` windows of ``T + 1`` tokens whose starts are
``o + T * k`` for ``k`` in ``range(n)``. Consecutive windows share one token (the
last target of one is the first input of the next), so every token but at most ``T``
at the ends is a target exactly once per epoch. The offset ``o`` is drawn per
``(seed, epoch)`` in ``[0, N - 1 - n * T]`` (0 without shuffling), so epochs cut the
stream at different places; the loader then shuffles the order of the ``n`` windows
like rows (a full permutation per epoch, without replacement).

Document fields (``Loader(documents=True)``, FORMAT.md "Document fields"): a window
``w`` of ``T + 1`` tokens has inputs ``w[:-1]`` and targets ``w[1:]``; its ``T`` input
positions are cut into *segments* at every document start inside the window (and the
window's own start), and from these come ``position_ids``, ``cu_seqlens``,
``max_seqlen`` and ``loss_mask``. :class:`PackedWindows` instead places whole documents
into windows (best-fit decreasing) and pads the rest.
"""

from __future__ import annotations

import bisect
import threading

import numpy as np

from datafuel._checks import check_int

from ._tokens import TokenStream

try:  # the one-pass document fields (optional C extension, see _gather.c)
    from . import _gather
except ImportError:  # pragma: no cover - the numpy path below stays the reference
    _gather = None  # type: ignore[assignment]

__all__ = ["DOCUMENT_FIELDS", "PackedWindows", "TokenWindows"]

#: the fields ``documents=`` adds to a token batch, in batch order
DOCUMENT_FIELDS = ("position_ids", "cu_seqlens", "max_seqlen", "loss_mask")


class TokenWindows:
    """Window starts of a :class:`TokenStream` per epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.loaders import TokenStream
    >>> ts = TokenStream([np.arange(11, dtype=np.uint16)], [np.array([0, 11], np.uint64)], np.dtype("uint16"))
    >>> w = TokenWindows(ts, seq_len=4)
    >>> len(w), w.starts(seed=0, epoch=0, shuffle=False).tolist()
    (2, [0, 4])
    """

    #: the sampler's tag for these windows (a state is only restored into the same kind)
    kind_prefix = "windows"

    def __init__(self, stream: TokenStream, seq_len: int) -> None:
        check_int("seq_len", seq_len)
        self.stream = stream
        self.seq_len = seq_len
        self.length = seq_len + 1
        n_tok = stream.num_tokens
        self.num_windows = max(0, (n_tok - 1) // seq_len)
        #: how far the first window may move without losing a window
        self.slack = max(0, n_tok - 1 - self.num_windows * seq_len)
        self._bounds: np.ndarray | None = None
        self._max_segments: int | None = None
        self._offsets: dict[tuple[int, int], int] = {}  # (seed, epoch) -> offset
        self._arange = _Arange()
        self._grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._grids_lock = threading.Lock()
        # a lazy (remote) stream keeps each shard's first T tokens: a window running
        # into the next shard reads them from there, not from that whole shard
        stream.keep_heads(seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def offset(self, seed: int, epoch: int, shuffle: bool) -> int:
        """Where the epoch's first window starts (0 without shuffling)."""
        if not shuffle or self.slack == 0:
            return 0
        key = (int(seed) & 0xFFFFFFFF, int(epoch))
        got = self._offsets.get(key)
        if got is None:
            # remembered: a mixture asks once per source and batch for the same few
            # passes, and a Generator costs ~10 us to make (a third of a mixture batch)
            rng = np.random.default_rng([key[0], key[1], 0x70C5])
            got = int(rng.integers(0, self.slack + 1))
            if len(self._offsets) >= 256:
                self._offsets.clear()
            self._offsets[key] = got
        return got

    def starts(self, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """Start token of every window of the epoch, in stream order."""
        o = self.offset(seed, epoch, shuffle)
        return o + self.seq_len * np.arange(self.num_windows, dtype=np.int64)

    def read(self, starts: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The windows ``[s, s + seq_len + 1)``: a ``(len(starts), seq_len + 1)`` array.

        From a lazy stream, a window that runs into the next shard takes that part from
        the shard's head (:meth:`TokenStream.capture_head`): a remote pass pins only the
        shard a window starts in, and the next one only if its head is not kept yet.
        """
        stream, length = self.stream, self.length
        if stream.head_tokens < self.seq_len:  # every stream but a remote one
            return stream.windows(starts, length, out=out)
        st = np.asarray(starts, dtype=np.int64).reshape(-1)
        bounds = stream.shard_starts
        if (
            st.size == 0
            or int(st.min()) < 0
            or int(st.max()) + length > stream.num_tokens
            or (out is not None and out.shape != (st.size, length))
        ):
            return stream.windows(st, length, out=out)  # (raises, naming what is wrong)
        k = np.searchsorted(bounds, st, side="right") - 1
        cross = st + self.seq_len >= bounds[k + 1]
        if not bool(cross.any()):
            return stream.windows(st, length, out=out)
        if out is None:
            out = np.empty((st.size, length), dtype=stream.dtype)
        rest = np.flatnonzero(~cross)
        if rest.size:
            out[rest] = stream.windows(
                st[rest], length, out=np.empty((rest.size, length), out.dtype)
            )
        sel = np.flatnonzero(cross)
        part = np.empty((sel.size, length), out.dtype)
        stream.windows_from_heads(st[sel], length, part)
        out[sel] = part
        return out

    # -- by shard (the shard-aware order, a remote set's pins) -------------------------
    def shard_offsets(self, o: int) -> np.ndarray:
        """For the epoch grid ``o + T * k``: the first window starting in each shard, then
        ``num_windows`` (window ids grouped by the shard of their start, as rows are by
        ``ShardSet.offsets``): what ``shuffle="shards"`` orders windows by.

        >>> import numpy as np
        >>> from datafuel.loaders import TokenStream
        >>> ts = TokenStream([np.zeros(n, np.uint16) for n in (7, 2, 12)], None, np.dtype("uint16"))
        >>> TokenWindows(ts, seq_len=4).shard_offsets(1).tolist()
        [0, 2, 2, 5]
        """
        firsts = self.stream.shard_starts[:-1] - o
        k = np.clip(-(-firsts // self.seq_len), 0, self.num_windows)
        return np.concatenate([k, [self.num_windows]]).astype(np.int64)

    def shard_span(self, o: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first and last shard (inclusive) that each window ``ids`` of the grid
        ``o + T * k`` reads: the shards of its tokens ``[s, s + T]``."""
        return self.start_span(o + self.seq_len * np.asarray(ids, dtype=np.int64))

    def start_span(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first and last shard (inclusive) of the windows starting at tokens ``s``."""
        starts = self.stream.shard_starts
        first = np.searchsorted(starts, s, side="right") - 1
        last = np.searchsorted(starts, s + self.seq_len, side="right") - 1
        return first.astype(np.int64), last.astype(np.int64)

    # -- document fields -------------------------------------------------------------
    @property
    def boundaries(self) -> np.ndarray:
        """Distinct document starts strictly inside the stream, ``(0, N)``, sorted."""
        if self._bounds is None:
            d = self.stream.doc_starts
            inner = d[(d > 0) & (d < self.stream.num_tokens)]
            if inner.size > 1 and not bool(np.all(inner[1:] > inner[:-1])):
                inner = np.unique(inner)  # empty documents repeat a start
            self._bounds = np.ascontiguousarray(inner, dtype=np.int64)
        return self._bounds

    @property
    def max_segments(self) -> int:
        """The most segments any window of ``T`` inputs of this stream can hold, at most ``T``.

        One plus the most document starts in any ``T - 1`` consecutive input positions
        after a window's first: a bound over every possible start, so every epoch's
        ``cu_seqlens`` has the same length.
        """
        if self._max_segments is None:
            u = self.boundaries
            most = 0
            if u.size and self.seq_len > 1:
                # the densest run of T - 1 positions can be taken to begin at a start
                reach = np.searchsorted(u, u + (self.seq_len - 1), side="left")
                most = int((reach - np.arange(u.size)).max())
            self._max_segments = min(self.seq_len, 1 + most)
        return self._max_segments

    def _grid(self, o: int) -> tuple[np.ndarray, np.ndarray]:
        """For the epoch grid ``o + T * k``: the first document start after each grid
        point (``k`` in ``0 .. n``) and whether each window's end ``o + T * (k + 1)``
        starts a document. One sorted search per epoch offset (the last two are kept)
        instead of three scattered ones per batch."""
        cached = self._grids.get(o)
        if cached is not None:
            return cached
        u = self.boundaries
        grid = o + self.seq_len * np.arange(self.num_windows + 1, dtype=np.int64)
        after = np.searchsorted(u, grid, side="right")
        crossing = np.searchsorted(u, grid[1:], side="left") < after[1:]
        small = after.astype(np.int32) if u.size < 2**31 else after
        with self._grids_lock:
            if len(self._grids) >= 2:
                self._grids.pop(next(iter(self._grids)))
            self._grids[o] = (small, crossing)
        return small, crossing

    def _inner_starts(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per window: index in ``boundaries`` of its first document start after ``s``,
        how many start in ``(s, s + T)``, and whether ``s + T`` starts one."""
        t = self.seq_len
        o = int(s[0]) % t
        k = (s - o) // t
        if self.num_windows and bool(np.all(s == o + t * k)) and int(k.max()) < self.num_windows:
            after, crossing = self._grid(o)
            lo = after[k].astype(np.int64)
            cross = crossing[k]
            return lo, after[k + 1] - cross - lo, cross
        u = self.boundaries  # starts off the epoch's grid: search each
        lo = np.searchsorted(u, s, side="right")
        mid = np.searchsorted(u, s + t, side="left")
        return lo, mid - lo, np.searchsorted(u, s + t, side="right") > mid

    def read_documents(
        self,
        starts: np.ndarray,
        out: np.ndarray | None = None,
        fields: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`read` and :meth:`document_fields` of the same windows, in one native call
        where it can (``_gather.windows_at`` with its fields: one release of the GIL a
        batch, the fields written while the worker has the batch's windows at hand), into
        ``out`` and ``fields``' ``position_ids`` and ``loss_mask`` when they fit."""
        stream = self.stream
        if (
            _gather is None
            or stream.head_tokens >= self.seq_len  # a remote stream's heads: read() knows them
            or (out is not None and not (out.flags.c_contiguous and out.dtype.kind in "iu"))
        ):
            return self.read(starts, out=out), self.document_fields(starts, out=fields)
        st = np.ascontiguousarray(starts, dtype=np.int64).reshape(-1)
        b, t = st.size, self.seq_len
        if out is None:
            out = np.empty((b, self.length), dtype=stream.dtype)
        elif out.shape != (b, self.length) or out.dtype.itemsize < stream.dtype.itemsize:
            return self.read(st, out=out), self.document_fields(st, out=fields)
        bufs = _field_buffers(fields, b, t, self.max_segments)
        if bufs is None:
            return self.read(st, out=out), self.document_fields(st, out=fields)
        pos, mask, cu = bufs
        longest = np.empty((), np.int32)
        if b:
            stream._windows_native(st, self.length, out, (self.boundaries, pos, mask, cu, longest))
        else:
            cu[:] = 0
            longest[()] = 0
        return out, {
            "position_ids": pos,
            "cu_seqlens": cu,
            "max_seqlen": longest,
            "loss_mask": mask,
        }

    def document_fields(
        self, starts: np.ndarray, out: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The document fields of the windows starting at ``starts`` (see FORMAT.md).

        Segments of window ``[s, s + T + 1)``: its inputs ``s .. s + T - 1`` cut before
        every document start ``d`` with ``s < d < s + T``. The last input of a segment
        has a target in the next document (``loss_mask`` 0), except for the window's
        last segment, whose final target ``s + T`` crosses only when ``s + T`` is a
        document start.
        """
        s = np.ascontiguousarray(starts, dtype=np.int64).reshape(-1)
        if _gather is not None:
            return self._native_fields(s, out)
        return self._numpy_fields(s, out)

    def _native_fields(
        self, s: np.ndarray, out: dict[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """:meth:`document_fields` in one pass over the outputs (``_gather.document_fields``),
        into ``out``'s ``position_ids`` and ``loss_mask`` when they are contiguous."""
        b, t = s.size, self.seq_len
        bufs = _field_buffers(out, b, t, self.max_segments)
        if bufs is None:
            return self._numpy_fields(s, out)  # a strided slot: numpy writes through it
        pos, mask, cu = bufs
        longest = _gather.document_fields(
            self.boundaries, s, t, self.stream.num_tokens, pos, mask, cu
        )
        return {
            "position_ids": pos,
            "cu_seqlens": cu,
            "max_seqlen": np.array(longest, np.int32),
            "loss_mask": mask,
        }

    def _numpy_fields(
        self, s: np.ndarray, out: dict[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """:meth:`document_fields` in numpy (the reference, and the path without the C
        extension)."""
        b = s.size
        if b == 0:
            lo = counts = np.zeros(0, np.int64)
            cross = np.zeros(0, bool)
        else:
            lo, counts, cross = self._inner_starts(s)
        total = int(counts.sum())
        ids = np.arange(b)
        first = ids + np.cumsum(counts) - counts  # flat index of each window's first segment
        off = np.zeros(b + total, np.int64)
        cut_last = np.ones(b + total, bool)
        cut_last[first + counts] = cross  # each window's last segment
        if total:
            win = np.repeat(ids, counts)
            inner = np.arange(total)
            # interior start i of window j sits at flat index i + j + 1
            off[inner + win + 1] = self.boundaries[lo[win] + inner - (first[win] - win)] - s[win]
        return _segment_fields(
            self.seq_len, self.max_segments, counts + 1, off, cut_last, None, self._arange, out
        )


class PackedWindows:
    """Whole documents placed into windows of ``seq_len + 1`` tokens, best-fit decreasing.

    Built once per stream (not per epoch; the loader shuffles the order of the windows
    per epoch like rows): a pure function of the documents and ``seq_len``, so resume is
    the sampler's as for any other sample.

    - A document of ``L`` tokens becomes pieces ``[T * m, min(T * m + T + 1, L))`` for
      ``m`` in ``range(ceil((L - 1) / T))``: one piece when ``L <= T + 1``; a longer one
      is cut at multiples of ``T``, its pieces overlapping by one token as plain windows
      do, so every target of the document is a target exactly once. Documents (and
      last pieces) of one token hold no target and are left out.
    - Pieces are placed longest first (ties in stream order) into the open window with
      the least room that fits them, else a new window; a window's pieces follow each
      other from its first token in placement order, and its remaining token slots hold
      ``pad_id``.

    ``padding_fraction`` is the share of all windows' ``T + 1`` token slots that hold
    padding.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.loaders import TokenStream
    >>> docs = np.array([0, 3, 8, 10], np.uint64)  # documents of 3, 5 and 2 tokens
    >>> ts = TokenStream([np.arange(1, 11, dtype=np.uint16)], [docs], np.dtype("uint16"))
    >>> p = PackedWindows(ts, seq_len=5)
    >>> p.read(np.arange(len(p))).tolist(), p.padding_fraction
    ([[4, 5, 6, 7, 8, 0], [1, 2, 3, 9, 10, 0]], 0.16666666666666666)
    """

    kind_prefix = "packed"

    def __init__(self, stream: TokenStream, seq_len: int, pad_id: int = 0) -> None:
        check_int("seq_len", seq_len)
        self.stream = stream
        self.seq_len = seq_len
        self.length = seq_len + 1
        self.pad_id = int(pad_id)
        self._arange = _Arange()
        p_start, p_len = _pieces(stream.doc_starts, seq_len)
        window = _best_fit(p_len, self.length)
        order = np.argsort(window, kind="stable")  # by window, in placement order
        self.piece_start = p_start[order]
        self.piece_len = p_len[order]
        n = int(window.max()) + 1 if window.size else 0
        counts = np.bincount(window, minlength=n)
        #: pieces of window ``w`` are ``ptr[w] .. ptr[w + 1]``
        self.ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        within = np.cumsum(self.piece_len) - self.piece_len
        self.piece_off = within - np.repeat(within[self.ptr[:-1]], counts)
        #: tokens of each window that hold document tokens (the rest is padding)
        self.used = np.add.reduceat(self.piece_len, self.ptr[:-1]) if n else np.zeros(0, np.int64)
        self.num_windows = n
        slots = n * self.length
        self.padding_fraction = (slots - int(self.piece_len.sum())) / slots if slots else 0.0
        # segments of the inputs: each piece, then the padding when it reaches an input
        pad_seg = self.used < seq_len
        self.max_segments = int((counts + pad_seg).max()) if n else 1
        #: windows that are one whole stream window (a piece of ``T + 1`` tokens, no
        #: padding): read as plain windows are, in one native copy
        self.full = (counts == 1) & (self.used == self.length)

    def __len__(self) -> int:
        return self.num_windows

    def starts(self, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """The windows' ids (the packing does not change with the epoch)."""
        return np.arange(self.num_windows, dtype=np.int64)

    def _batch_pieces(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of windows ``ids``, in order, and how many each window has."""
        w = np.asarray(ids, dtype=np.int64).reshape(-1)
        if w.size and (int(w.min()) < 0 or int(w.max()) >= self.num_windows):
            raise IndexError(
                f"packed window id out of range [0, {self.num_windows}): got "
                f"{int(w[(w < 0) | (w >= self.num_windows)][0])}."
            )
        first, counts = self.ptr[w], self.ptr[w + 1] - self.ptr[w]
        total = int(counts.sum())
        pidx = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(total)
        return pidx, counts

    def read(self, ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Windows ``ids`` as a ``(len(ids), seq_len + 1)`` array of tokens and padding."""
        w = np.asarray(ids, dtype=np.int64).reshape(-1)
        if out is None:
            out = np.empty((w.size, self.length), dtype=self.stream.dtype)
        if w.size == 0 or int(w.min()) < 0 or int(w.max()) >= self.num_windows:
            return self._read_pieces(w, out)  # (out-of-range ids raise there, named)
        full = self.full[w]
        if bool(full.all()):  # the usual batch of long documents: plain windows
            return self.stream.windows(self.piece_start[self.ptr[w]], self.length, out=out)
        if bool(full.any()):
            sel = np.flatnonzero(full)
            out[sel] = self.stream.windows(self.piece_start[self.ptr[w[sel]]], self.length)
            rest = np.flatnonzero(~full)
            out[rest] = self._read_pieces(w[rest], np.empty((rest.size, self.length), out.dtype))
            return out
        return self._read_pieces(w, out)

    def _read_pieces(self, ids: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`read` piece by piece in numpy (windows of several pieces or padding)."""
        pidx, counts = self._batch_pieces(ids)
        b = counts.size
        out.fill(self.pad_id)
        lens = self.piece_len[pidx]
        n_tok = int(lens.sum())
        if n_tok == 0:
            return out
        before = np.cumsum(lens) - lens
        ar = self._arange.get(n_tok)
        src = np.repeat(self.piece_start[pidx] - before, lens) + ar
        row = np.repeat(np.arange(b, dtype=np.int64), counts)
        dst = np.repeat(row * self.length + self.piece_off[pidx] - before, lens) + ar
        out.reshape(-1)[dst] = self.stream.take(src)
        return out

    def read_documents(
        self,
        ids: np.ndarray,
        out: np.ndarray | None = None,
        fields: dict[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`read` and :meth:`document_fields` of windows ``ids``."""
        return self.read(ids, out=out), self.document_fields(ids, out=fields)

    def document_fields(
        self, ids: np.ndarray, out: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The document fields of windows ``ids``: one segment per piece, then padding."""
        w = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if _gather is not None and w.size:
            return self._native_fields(w, out)
        return self._numpy_fields(w, out)

    def _native_fields(
        self, w: np.ndarray, out: dict[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """:meth:`document_fields` by the token windows' kernel over a virtual stream of
        the batch's windows laid end to end (``T + 1`` slots each): its boundaries are
        the pieces' starts after a window's first, and where the padding begins; then
        every target of the padding is masked."""
        pidx, counts = self._batch_pieces(w)
        b, t, length = w.size, self.seq_len, self.length
        base = np.repeat(np.arange(b, dtype=np.int64) * length, counts)
        first = np.zeros(pidx.size, bool)
        first[np.cumsum(counts) - counts] = True
        used = self.used[w]
        padded = np.flatnonzero(used <= t)  # padding from an input, or only in slot T
        bounds = np.concatenate(
            [(base + self.piece_off[pidx])[~first], padded * length + used[padded]]
        )
        bounds.sort()
        bufs = _field_buffers(out, b, t, self.max_segments)
        if bufs is None:
            return self._numpy_fields(w, out)
        pos, mask, cu = bufs
        starts = np.arange(b, dtype=np.int64) * length
        longest = _gather.document_fields(bounds, starts, t, b * length, pos, mask, cu)
        for j in padded[used[padded] < t].tolist():  # no target of the padding counts
            mask[j, used[j] :] = False
        return {
            "position_ids": pos,
            "cu_seqlens": cu,
            "max_seqlen": np.array(longest, np.int32),
            "loss_mask": mask,
        }

    def _numpy_fields(
        self, w: np.ndarray, out: dict[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """:meth:`document_fields` in numpy (the reference)."""
        pidx, counts = self._batch_pieces(w)
        t = self.seq_len
        used = self.used[w]
        has_pad = used < t
        nseg = counts + has_pad
        n = int(nseg.sum())
        seg_before = np.cumsum(nseg) - nseg
        off = np.empty(n, np.int64)
        cut_last = np.ones(n, bool)
        pad = np.zeros(n, bool)
        piece_slot = np.arange(pidx.size) + np.repeat(
            seg_before - (np.cumsum(counts) - counts), counts
        )
        off[piece_slot] = self.piece_off[pidx]
        # a piece that reaches the window's last slot (T) keeps its last input's target
        cut_last[piece_slot] = self.piece_off[pidx] + self.piece_len[pidx] <= t
        pad_slot = (seg_before + counts)[has_pad]
        off[pad_slot] = used[has_pad]
        pad[pad_slot] = True
        return _segment_fields(t, self.max_segments, nseg, off, cut_last, pad, self._arange, out)


def _pieces(doc_starts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every document cut into pieces of at most ``T + 1`` tokens at multiples of ``T``."""
    starts = doc_starts[:-1].astype(np.int64)
    lengths = np.diff(doc_starts).astype(np.int64)
    n_pieces = np.where(lengths >= 2, (lengths + seq_len - 2) // seq_len, 0)
    total = int(n_pieces.sum())
    doc = np.repeat(np.arange(starts.size), n_pieces)
    m = np.arange(total) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    p_start = starts[doc] + seq_len * m
    p_len = np.minimum(seq_len + 1, lengths[doc] - seq_len * m)
    return p_start, p_len


def _best_fit(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Best-fit decreasing: the window of each item (lengths in ``[2, capacity]``).

    Longest first, ties in item order; each goes to the open window with the least room
    that holds it (among those, the one opened or refilled last), else a new window.
    Windows are numbered in the order they are opened. ``O(n log n)``.
    """
    order = np.argsort(-lengths, kind="stable")
    window = np.empty(lengths.size, np.int64)
    rooms: list[int] = []  # sorted rooms of open windows that could still take an item
    by_room: dict[int, list[int]] = {}
    opened = 0
    for i, length in zip(order.tolist(), lengths[order].tolist(), strict=True):
        j = bisect.bisect_left(rooms, length)
        if j == len(rooms):
            w, room = opened, capacity - length
            opened += 1
        else:
            r = rooms[j]
            stack = by_room[r]
            w = stack.pop()
            if not stack:
                del rooms[j], by_room[r]
            room = r - length
        window[i] = w
        if room >= 2:  # items hold at least 2 tokens
            if room not in by_room:
                bisect.insort(rooms, room)
                by_room[room] = []
            by_room[room].append(w)
    return window


def _field_buffers(
    out: dict[str, np.ndarray] | None, b: int, t: int, segments: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The native kernel's outputs for ``b`` windows of ``t`` inputs: ``out``'s
    ``position_ids`` and ``loss_mask`` when it has them (None when they are not
    contiguous: numpy must write through them), else new ones; a new ``cu_seqlens``."""
    if out is not None and "position_ids" in out:
        pos, mask = out["position_ids"], out["loss_mask"]
        if not (_fits(pos, np.int64, (b, t)) and _fits(mask, np.bool_, (b, t))):
            return None
    else:
        pos, mask = np.empty((b, t), np.int64), np.empty((b, t), np.bool_)
    return pos, mask, np.empty(b * segments + 1, np.int32)


def _fits(a: np.ndarray, dtype: type, shape: tuple[int, int]) -> bool:
    """Whether ``a`` is a writable C-contiguous array of ``dtype`` and ``shape``."""
    return a.dtype == dtype and a.shape == shape and a.flags.c_contiguous and a.flags.writeable


class _Arange:
    """A shared ``np.arange(n)`` that grows as needed (read-only slices of one array)."""

    def __init__(self) -> None:
        self._a = np.zeros(0, np.int64)
        self._lock = threading.Lock()

    def get(self, n: int) -> np.ndarray:
        a = self._a
        if a.size < n:
            with self._lock:
                a = self._a
                if a.size < n:
                    a = np.arange(max(n, 2 * a.size), dtype=np.int64)
                    a.flags.writeable = False
                    self._a = a
        return a[:n]


def _segment_fields(
    seq_len: int,
    max_segments: int,
    nseg: np.ndarray,
    off: np.ndarray,
    cut_last: np.ndarray,
    pad: np.ndarray | None,
    arange: _Arange,
    out: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """``position_ids``, ``cu_seqlens``, ``max_seqlen``, ``loss_mask`` from the segments.

    ``nseg[j]`` segments for window ``j``; flattened over the batch, segment ``i``
    starts at input ``off[i]`` of its window (each window's first at 0), its last
    input's target is masked where ``cut_last[i]``, and every target of a ``pad``
    segment is masked.
    """
    b, t = nseg.size, seq_len
    n = off.size
    win = np.repeat(np.arange(b, dtype=np.int64), nseg)
    seg = win * t + off  # flat start of every segment, increasing
    lens = np.empty(n, np.int64)
    np.subtract(seg[1:], seg[:-1], out=lens[:-1])
    if n:
        lens[-1] = b * t - seg[-1]
    cu = np.full(b * max_segments + 1, b * t, np.int32)
    cu[:n] = seg
    flat = b * t
    if out is not None and "position_ids" in out:
        pos = out["position_ids"].reshape(-1)
        np.subtract(arange.get(flat), np.repeat(seg, lens), out=pos)
        mask = out["loss_mask"].reshape(-1)
        mask.fill(True)
    else:
        pos = np.repeat(seg, lens)
        np.subtract(arange.get(flat), pos, out=pos)  # in place: no second (B, T) buffer
        mask = np.ones(flat, bool)
    mask[(seg + lens - 1)[cut_last]] = False
    if pad is not None and bool(pad.any()):
        mask[np.repeat(pad, lens)] = False
    return {
        "position_ids": pos.reshape(b, t),
        "cu_seqlens": cu,
        "max_seqlen": np.array(int(lens.max()) if n else 0, np.int32),
        "loss_mask": mask.reshape(b, t),
    }
