"""``EpochSampler``: sample order per epoch, DDP split and exact resume state.

The order of an epoch is a pure function of ``(seed, epoch)`` (a full permutation,
a shard-window order for remote shard sets, or storage order without shuffling). Ranks consume it in *global steps*: step ``k``
takes the next ``world_size * b`` samples of the global order and rank ``r`` gets the
``r``-th run of ``b`` of them. The state is therefore one number that does not depend
on the world size: how many samples of the epoch's global order all ranks have
consumed. Restoring it under another world size continues the same global order,
never repeating or skipping a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from datafuel._checks import check_int
from datafuel.errors import ConfigError

__all__ = [
    "BatchPlan",
    "EpochBatchSampler",
    "EpochSampler",
    "MixtureSampler",
    "epoch_order",
    "max_shard_bytes_per_run",
    "max_shards_per_run",
    "shard_locality",
    "shard_window_order",
    "shard_window_run_bound",
]

_STATE_KEYS = ("epoch", "position", "seed", "shuffle", "num_samples", "kind")


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The global sample order of one epoch: a permutation of ``range(num_samples)``.

    With ``shuffle`` it is drawn from a generator seeded by ``(seed, epoch)`` only, so
    every rank and every resumed run computes the same order.
    """
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5A11])
    return rng.permutation(num_samples).astype(np.int64, copy=False)


# -- shard-window order ----------------------------------------------------------------
#: key units per shard rank: a row's sort key is ``rank * _KEY_UNIT + r``, ``r < window * _KEY_UNIT``
_KEY_UNIT = 1 << 32


def _shard_sizes(offsets: np.ndarray) -> np.ndarray:
    """Rows per shard from ``ShardSet.offsets`` (first row of each shard, then the total)."""
    offsets = np.asarray(offsets)
    if (
        offsets.ndim != 1
        or offsets.size < 1
        or not np.issubdtype(offsets.dtype, np.integer)
        or offsets[0] != 0
    ):
        raise ConfigError(
            "offsets must be a 1-d int array starting at 0 (each shard's first row, then the "
            f"total). Got {offsets!r} instead."
        )
    sizes = np.diff(offsets.astype(np.int64))
    if (sizes < 0).any():
        raise ConfigError(
            "offsets must be non-decreasing (each shard's first row, then the total)."
        )
    return sizes


def shard_window_order(offsets: np.ndarray, seed: int, epoch: int, window: int) -> np.ndarray:
    """A shard-aware epoch order: a permutation of ``range(offsets[-1])`` (int64).

    Per epoch the shards are permuted (``pi``) and each row of the shard at rank ``i`` of
    ``pi`` gets the sort key ``i * 2**32 + r``, ``r`` uniform in ``[0, w * 2**32)``; rows
    are ordered by key (stable). With ``w = min(window, number of shards)`` this is
    ``i + w * u`` with ``u ~ U[0, 1)`` in exact integer arithmetic: every row of the shard at
    rank ``i`` lies strictly before every row of the shard at rank ``i + w``, so at most
    ``w`` shards are *open* (have rows both before and after) between any two consecutive
    positions, and a run of ``R`` positions touches at most
    :func:`shard_window_run_bound` shards. ``window=1`` still shuffles inside each shard
    (but reads the shards one after another, never two at once); ``window >=`` the number of shards
    spreads every shard over the whole epoch but is *not* a full permutation (shards at
    the two ends of ``pi`` still crowd the two ends of the epoch).

    Pure function of ``(seed, epoch)`` and the shard sizes, never of the world size:
    ``rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0x5A12])``, then
    ``pi = rng.permutation(num_shards)``, then ``r = rng.integers(0, w * 2**32, size=N,
    dtype=np.int64)`` for the ``N`` rows laid out shard by shard in the order of ``pi``
    (each shard's rows ascending), then a stable ``argsort`` of the keys.

    >>> o = shard_window_order(np.array([0, 3, 3, 7]), seed=0, epoch=0, window=1)
    >>> sorted(o.tolist()) == list(range(7))
    True
    """
    check_int("window", window)
    sizes = _shard_sizes(offsets)
    num_shards = int(sizes.size)
    total = int(sizes.sum())
    w = min(window, max(num_shards, 1))
    if num_shards + w >= 1 << 31:
        raise ConfigError(f"shard_window_order takes fewer than 2**31 shards; got {num_shards}.")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5A12])
    pi = rng.permutation(num_shards)
    sizes_pi = sizes[pi]
    starts_pi = np.asarray(offsets, dtype=np.int64)[:-1][pi]
    layout_start = np.cumsum(sizes_pi) - sizes_pi  # where each shard of pi starts in the layout
    rank = np.repeat(np.arange(num_shards, dtype=np.int64), sizes_pi)
    rows = np.repeat(starts_pi - layout_start, sizes_pi) + np.arange(total, dtype=np.int64)
    r = rng.integers(0, w * _KEY_UNIT, size=total, dtype=np.int64)
    keys = rank * _KEY_UNIT + r
    return rows[np.argsort(keys, kind="stable")]


def shard_window_run_bound(offsets: np.ndarray, window: int, run: int) -> int:
    """The most distinct shards a run of ``run`` consecutive positions of *any*
    :func:`shard_window_order` over ``offsets`` can touch (any seed, epoch, position).

    ``min(run, non-empty shards, 2 * w + run // m)`` with ``w = min(window, shards)`` and
    ``m`` the smallest non-empty shard. Why: the run's rows have keys in ``[a, b]``; the
    shards it touches have ranks in ``(a / 2**32 - w, b / 2**32]``; of those, the ranks
    more than ``w`` after the first's rank and at least ``w`` before the last's lie wholly
    inside the run (so there are at most ``run // m`` non-empty ones), and the rest are at
    most ``w`` at each end. A typical run touches about ``w + run / mean size + 1``; the
    remote cache sizes itself with :func:`max_shard_bytes_per_run` on the actual order.
    """
    check_int("window", window)
    check_int("run", run)
    sizes = _shard_sizes(offsets)
    nonempty = sizes[sizes > 0]
    if nonempty.size == 0:
        return 0
    w = min(window, int(sizes.size))
    return int(min(run, nonempty.size, 2 * w + run // int(nonempty.min())))


def _shard_of(order: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shard index of each position of ``order``."""
    return np.searchsorted(np.asarray(offsets), np.asarray(order), side="right") - 1


def _max_over_runs(order: np.ndarray, offsets: np.ndarray, run: int, weight: np.ndarray) -> int:
    """Max over all runs of ``run`` consecutive positions of the summed ``weight`` of the
    distinct shards in the run (a shard counts once, at its first position in the run)."""
    check_int("run", run)
    shard = _shard_of(order, offsets)
    n = int(shard.size)
    if n == 0:
        return 0
    pos = np.arange(n, dtype=np.int64)
    by_shard = np.argsort(shard, kind="stable")  # positions grouped by shard, ascending
    prev = np.full(n, -1, dtype=np.int64)  # previous position of the same shard
    same = shard[by_shard[1:]] == shard[by_shard[:-1]]
    prev[by_shard[1:][same]] = by_shard[:-1][same]
    # position p is the first of its shard in the runs starting at s in [lo, p]
    lo = np.maximum(prev + 1, pos - run + 1)
    w = np.asarray(weight, dtype=np.int64)[shard]
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, np.maximum(lo, 0), w)
    diff[pos + 1] -= w
    per_start = np.cumsum(diff[:n])
    return int(per_start[: max(1, n - run + 1)].max())


def _max_span_bytes_per_run(
    first: np.ndarray, last: np.ndarray, run: int, shard_bytes: np.ndarray
) -> int:
    """:func:`max_shard_bytes_per_run` for samples that each read a range of shards:
    position ``p`` reads shards ``first[p] .. last[p]`` (token windows that run into the
    next shards). The largest total ``shard_bytes`` of the distinct shards any ``run``
    consecutive positions read.

    >>> _max_span_bytes_per_run(np.array([0, 1, 2]), np.array([1, 1, 2]), 2, np.array([5, 1, 9]))
    10
    """
    check_int("run", run)
    first = np.asarray(first, dtype=np.int64)
    last = np.asarray(last, dtype=np.int64)
    n = int(first.size)
    if n == 0:
        return 0
    counts = last - first + 1
    pos = np.repeat(np.arange(n, dtype=np.int64), counts)
    shard = np.repeat(first, counts) + (
        np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    by = np.lexsort((pos, shard))  # grouped by shard, positions ascending
    pos, shard = pos[by], shard[by]
    prev = np.full(pos.size, -1, dtype=np.int64)  # previous position reading the same shard
    same = shard[1:] == shard[:-1]
    prev[1:][same] = pos[:-1][same]
    # a shard's read at p is its first in the runs starting at s in [lo, p]
    lo = np.maximum(prev + 1, pos - run + 1)
    w = np.asarray(shard_bytes, dtype=np.int64)[shard]
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, np.maximum(lo, 0), w)
    np.add.at(diff, pos + 1, -w)
    per_start = np.cumsum(diff[:n])
    return int(per_start[: max(1, n - run + 1)].max())


def max_shards_per_run(order: np.ndarray, offsets: np.ndarray, run: int) -> int:
    """The most distinct shards any ``run`` consecutive positions of ``order`` touch.

    Every start counts, not only batch-aligned ones (an elastic resume shifts the
    alignment). O(N log N).

    >>> max_shards_per_run(np.arange(6), np.array([0, 2, 4, 6]), 3)
    2
    """
    num_shards = np.asarray(offsets).size - 1
    return _max_over_runs(order, offsets, run, np.ones(max(num_shards, 0), dtype=np.int64))


def max_shard_bytes_per_run(
    order: np.ndarray, offsets: np.ndarray, run: int, shard_bytes: np.ndarray
) -> int:
    """The largest total ``shard_bytes`` of the distinct shards any ``run`` consecutive
    positions of ``order`` touch: what a shard cache must hold to serve one batch.

    >>> max_shard_bytes_per_run(np.arange(6), np.array([0, 2, 4, 6]), 3, np.array([5, 1, 9]))
    10
    """
    shard_bytes = np.asarray(shard_bytes)
    if shard_bytes.shape != (np.asarray(offsets).size - 1,):
        raise ConfigError(
            f"shard_bytes must have one entry per shard ({np.asarray(offsets).size - 1}). "
            f"Got shape {shard_bytes.shape} instead."
        )
    return _max_over_runs(order, offsets, run, shard_bytes)


def shard_locality(order: np.ndarray, offsets: np.ndarray, batch_size: int) -> float:
    """How much of storage order's shard clustering per batch an order keeps: 0 for a
    full permutation (in expectation), 1 for storage order.

    ``(P - P_rand) / (P_storage - P_rand)``, where ``P`` is the probability that two
    distinct samples of one batch (``order`` cut into consecutive batches of
    ``batch_size``, the last one shorter) come from the same shard, ``P_storage`` the same
    for storage order, and ``P_rand = sum(n_s * (n_s - 1)) / (N * (N - 1))`` its exact
    expectation under a uniformly random permutation. If samples of one shard correlate
    (intra-shard correlation ``rho``), a batch mean's variance is ``sigma**2 / b * (1 +
    (b - 1) * rho * P)`` (Kish's design effect), so this is the fraction of storage
    order's excess gradient variance that the order keeps. 0 where no order can cluster
    (one shard, batches of one). A position-rank correlation (Spearman) would not do:
    a within-shard shuffle already scores ~0 on it.
    """
    check_int("batch_size", batch_size)
    sizes = _shard_sizes(offsets)
    n = int(sizes.sum())
    if np.asarray(order).size != n:
        raise ConfigError(f"order has {np.asarray(order).size} samples; offsets say {n}.")

    def same_pairs(shard: np.ndarray) -> int:
        key = (np.arange(n, dtype=np.int64) // batch_size) * max(sizes.size, 1) + shard
        _, counts = np.unique(key, return_counts=True)
        return int((counts * (counts - 1)).sum())

    full, last = divmod(n, batch_size)
    pairs = full * batch_size * (batch_size - 1) + last * (last - 1)
    storage = same_pairs(_shard_of(np.arange(n, dtype=np.int64), offsets)) / max(pairs, 1)
    rand = float((sizes * (sizes - 1)).sum()) / max(n * (n - 1), 1)
    if pairs == 0 or storage - rand <= 0:
        return 0.0
    return (same_pairs(_shard_of(order, offsets)) / pairs - rand) / (storage - rand)


def _check_shuffle(shuffle: Any) -> bool | str:
    """``"shards"``, or the bool of anything else (as before); other strings are refused."""
    if isinstance(shuffle, str):
        if shuffle != "shards":
            raise ConfigError(f'shuffle must be True, False or "shards". Got {shuffle!r} instead.')
        return shuffle
    return bool(shuffle)


class EpochSampler:
    """Batches of sample positions for one rank, with resumable state.

    Parameters
    ----------
    num_samples
        Size of an epoch's global order (rows, or token windows).
    batch_size
        Samples per batch on each rank.
    shuffle, seed
        ``True``: a full permutation per ``(seed, epoch)``; ``False``: storage order;
        ``"shards"``: :func:`shard_window_order` per ``(seed, epoch)`` (for remote shard
        sets: at most ``window`` shards open at a time), which needs ``offsets``.
    offsets, window
        With ``shuffle="shards"``: the shard set's offsets (each shard's first row, then
        ``num_samples``) and the window of shards (``>= 1``) rows are mixed over.
        ``offsets`` may instead be a function of the epoch giving that epoch's offsets
        (token windows: the windows starting in each shard depend on the epoch's offset
        ``o``); each must end at ``num_samples``.
    drop_last
        Drop the last, short global step. Otherwise it is kept, split evenly: every
        rank gets the same (smaller) last batch.
    rank, world_size
        This rank and the number of ranks. Per epoch, up to ``world_size - 1``
        samples at the end of the (shuffled) order are left out so that every rank
        gets the same number of batches and no sample is seen twice.
    kind
        A tag stored in the state (``"rows"`` or ``"windows:T"``) so that a state is
        not restored into a loader over something else.

    Examples
    --------
    >>> s = EpochSampler(10, 2, shuffle=False, rank=1, world_size=2)
    >>> [b.tolist() for b in s.batches()]
    [[2, 3], [6, 7], [9]]
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool | str = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        kind: str = "rows",
        offsets: np.ndarray | Callable[[int], np.ndarray] | None = None,
        window: int | None = None,
    ) -> None:
        check_int("batch_size", batch_size)
        check_int("world_size", world_size)
        check_int("rank", rank, low=0, high=world_size - 1)
        self.num_samples = int(num_samples)
        self.batch_size = batch_size
        #: ``True``, ``False`` or ``"shards"``
        self.shuffle: bool | str = _check_shuffle(shuffle)
        self.offsets: np.ndarray | None = None
        self.window: int | None = None
        self._epoch_offsets: Callable[[int], np.ndarray] | None = None
        if self.shuffle == "shards":
            if offsets is None:
                raise ConfigError('shuffle="shards" needs offsets (the shard set\'s offsets).')
            self.window = check_int("window", window)
            if callable(offsets):
                self._epoch_offsets = offsets
                offsets = offsets(0)
            self.offsets = self._checked_offsets(offsets)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.kind = kind
        self.epoch = 0
        #: samples of this epoch's global order consumed by all ranks together
        self.position = 0

    def _checked_offsets(self, offsets: np.ndarray) -> np.ndarray:
        got = np.asarray(offsets, dtype=np.int64)
        _shard_sizes(got)
        if int(got[-1]) != self.num_samples:
            raise ConfigError(
                f"offsets must end at num_samples={self.num_samples}. Got {int(got[-1])} instead."
            )
        return got

    def offsets_of(self, epoch: int) -> np.ndarray | None:
        """The offsets ``shuffle="shards"`` orders ``epoch`` by (None for other orders)."""
        if self._epoch_offsets is None or epoch == 0:
            return self.offsets
        return self._checked_offsets(self._epoch_offsets(epoch))

    # -- plan ------------------------------------------------------------------------
    def _usable(self, start: int) -> int:
        """Samples, from ``start`` on, that this epoch still hands out (all ranks)."""
        remaining = max(0, self.num_samples - start)
        if self.drop_last:
            step = self.world_size * self.batch_size
            return (remaining // step) * step
        return (remaining // self.world_size) * self.world_size

    def num_batches(self, start: int | None = None) -> int:
        """Batches this rank gets in an epoch (from ``start``, default the epoch's start)."""
        per_rank = self._usable(0 if start is None else start) // self.world_size
        return -(-per_rank // self.batch_size)

    def plan(self, start: int | None = None) -> list[tuple[int, int]]:
        """``(offset into the global order, batch length)`` for each batch of this rank.

        Starts at ``start`` (default: the current :attr:`position`).
        """
        p = self.position if start is None else start
        per_rank = self._usable(p) // self.world_size
        out = []
        done = 0
        while done < per_rank:
            b = min(self.batch_size, per_rank - done)
            out.append((p + self.rank * b, b))
            p += self.world_size * b
            done += b
        return out

    def advance(self, batch_len: int) -> None:
        """Record that one global step of ``batch_len`` samples per rank was consumed.

        After the epoch's last batch the state moves to the start of the next epoch, so
        a state saved there resumes with the next epoch's first batch.
        """
        self.position += self.world_size * batch_len
        if self._usable(self.position) // self.world_size == 0:
            self.finish_epoch()

    def order(self, epoch: int | None = None) -> np.ndarray:
        e = self.epoch if epoch is None else epoch
        if self.shuffle == "shards":
            offsets = self.offsets_of(e)
            assert offsets is not None and self.window is not None
            return shard_window_order(offsets, self.seed, e, self.window)
        return epoch_order(self.num_samples, self.seed, e, bool(self.shuffle))

    def __iter__(self) -> Iterator[int]:
        """This rank's sample indices of the current epoch, from its start (a torch ``Sampler``)."""
        order = self.order()
        for off, b in self.plan(0):
            yield from order[off : off + b].tolist()

    def __len__(self) -> int:
        """Samples this rank gets per epoch (``DistributedSampler``'s ``len``)."""
        return self._usable(0) // self.world_size

    def batches(self) -> Iterator[np.ndarray]:
        """The remaining batches of the current epoch for this rank (does not advance)."""
        order = self.order()
        for off, b in self.plan():
            yield order[off : off + b]

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; setting the epoch already in progress keeps its position."""
        check_int("epoch", int(epoch) if isinstance(epoch, np.integer) else epoch, low=0)
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def finish_epoch(self) -> None:
        self.epoch += 1
        self.position = 0

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Named, JSON-serialisable state: epoch and global position (world-size free).

        With ``shuffle="shards"`` it also holds ``window``.
        """
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_samples": self.num_samples,
            "kind": self.kind,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }
        if self.shuffle == "shards":
            state["window"] = self.window
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state; strict about missing keys and about a different order.

        A state saved under another world size or batch size continues the same
        global order from the same position (no sample repeated or skipped).
        """
        keys = _STATE_KEYS + (("window",) if self.shuffle == "shards" else ())
        missing = [k for k in keys if k not in state]
        if missing:
            raise ConfigError(f"loader state is missing key(s) {missing}; got {sorted(state)}.")
        checks: list[tuple[str, Any]] = [
            ("seed", self.seed),
            ("shuffle", self.shuffle),
            ("num_samples", self.num_samples),
            ("kind", self.kind),
        ]
        if self.shuffle == "shards":
            checks.append(("window", self.window))
        for key, mine in checks:
            if state[key] != mine:
                raise ConfigError(
                    f"loader state has {key}={state[key]!r} but this loader has {key}={mine!r}; "
                    "the saved sample order cannot be continued."
                )
        epoch, position = state["epoch"], state["position"]
        check_int("loader state epoch", epoch, low=0)
        check_int("loader state position", position, low=0, high=self.num_samples)
        self.epoch = epoch
        self.position = position


class EpochBatchSampler:
    """A ``torch.utils.data.BatchSampler`` view of an :class:`EpochSampler`.

    ``loader.batch_sampler`` for code that reads a ``DataLoader``'s (Lightning reads
    ``batch_sampler.sampler`` to call ``set_epoch``): iterating yields this rank's
    batches of the current epoch as lists of sample indices; ``len`` is the batch count.

    Examples
    --------
    >>> b = EpochBatchSampler(EpochSampler(5, 2, shuffle=False))
    >>> list(b), len(b), b.batch_size, b.drop_last
    ([[0, 1], [2, 3], [4]], 3, 2, False)
    """

    def __init__(self, sampler: EpochSampler) -> None:
        self.sampler = sampler

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def drop_last(self) -> bool:
        return self.sampler.drop_last

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.order()
        for off, b in self.sampler.plan(0):
            yield order[off : off + b].tolist()

    def __len__(self) -> int:
        return self.sampler.num_batches()


class BatchPlan(Sequence[tuple[int, int]]):
    """:meth:`EpochSampler.plan` computed per batch in O(1), never listed.

    Batch ``j`` of a rank that takes ``per_rank`` samples from global position ``start``
    in batches of ``batch_size``: every batch but the last is full, and global step
    ``j`` covers ``world_size`` runs of the same length, one per rank.
    """

    def __init__(self, start: int, per_rank: int, batch_size: int, rank: int, world_size: int):
        self.start, self.per_rank, self.batch_size = start, per_rank, batch_size
        self.rank, self.world_size = rank, world_size
        self._full, self._last = divmod(per_rank, batch_size)

    def __len__(self) -> int:
        return self._full + (self._last > 0)

    @overload
    def __getitem__(self, j: int) -> tuple[int, int]: ...
    @overload
    def __getitem__(self, j: slice) -> list[tuple[int, int]]: ...
    def __getitem__(self, j: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        if j < 0:
            j += len(self)
        if not 0 <= j < len(self):
            raise IndexError(j)
        b = self.batch_size if j < self._full else self._last
        return self.start + self.world_size * self.batch_size * j + self.rank * b, b


class _Positions:
    """The global positions of one epoch of a mixture, sliced like an order array."""

    __slots__ = ("base",)

    def __init__(self, base: int) -> None:
        self.base = base

    def __getitem__(self, s: slice | np.ndarray) -> np.ndarray:
        if isinstance(s, np.ndarray) and s.dtype.kind in "iu":  # the pass's shard plan
            return self.base + s.astype(np.int64)
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError("mixture positions are read in contiguous slices or index arrays")
        return np.arange(self.base + s.start, self.base + s.stop, dtype=np.int64)


class MixtureSampler(EpochSampler):
    """An :class:`EpochSampler` over the endless global order of a :class:`Mixture`.

    The global order is consumed contiguously and never skipped: an epoch is a budget
    of ``num_samples`` positions starting at :attr:`base` (the first position not yet
    consumed), split into global steps exactly as rows are. Its last step is rounded
    *up* so that every rank gets equal batches (full ones with ``drop_last``), taking
    fewer than ``world_size * batch_size`` positions of the budget that follows, and
    the next epoch starts right after it. The state is world-size free: ``(epoch,
    base, position)``; restoring it under another world size or batch size continues
    the same global order with no position repeated or skipped. :meth:`set_epoch` to
    another epoch ``e`` starts it at its nominal place ``e * num_samples``. The order
    is never materialised: :meth:`order` hands out positions and :meth:`plan`
    computes each batch's place on demand, so memory is O(1) in the budget.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: global position of the current epoch's first sample
        self.base = 0

    def _usable(self, start: int) -> int:
        remaining = max(0, self.num_samples - start)
        step = self.world_size * (self.batch_size if self.drop_last else 1)
        return -(-remaining // step) * step

    def set_epoch(self, epoch: int) -> None:
        check_int("epoch", int(epoch) if isinstance(epoch, np.integer) else epoch, low=0)
        if int(epoch) != self.epoch:
            self.base = int(epoch) * self.num_samples
        super().set_epoch(epoch)

    def finish_epoch(self) -> None:
        self.base += self.position
        super().finish_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "base": self.base}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "base" not in state:
            raise ConfigError(f"mixture loader state is missing key 'base'; got {sorted(state)}.")
        check_int("loader state base", state["base"], low=0)
        position: int = check_int("loader state position", state.get("position"), low=0)
        # the epoch's last step may run past the budget; such a state resumes as an empty pass
        super().load_state_dict({**state, "position": min(position, self.num_samples)})
        self.position = position
        self.base = state["base"]

    def plan(self, start: int | None = None) -> BatchPlan:  # type: ignore[override]
        p = self.position if start is None else start
        per_rank = self._usable(p) // self.world_size
        return BatchPlan(p, per_rank, self.batch_size, self.rank, self.world_size)

    def order(self, epoch: int | None = None) -> Any:
        if epoch is None or epoch == self.epoch:
            return _Positions(self.base)
        return _Positions(self.num_samples * epoch)
