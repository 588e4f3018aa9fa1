"""``EpochSampler``: sample order per epoch, DDP split and exact resume state.

The order of an epoch is a pure function of ``(seed, epoch)`` (a full permutation,
or storage order without shuffling). Ranks consume it in *global steps*: step ``k``
takes the next ``world_size * b`` samples of the global order and rank ``r`` gets the
``r``-th run of ``b`` of them. The state is therefore one number that does not depend
on the world size: how many samples of the epoch's global order all ranks have
consumed. Restoring it under another world size continues the same global order,
never repeating or skipping a sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from datafuel._checks import check_int
from datafuel.errors import ConfigError

__all__ = ["BatchPlan", "EpochBatchSampler", "EpochSampler", "MixtureSampler", "epoch_order"]

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


class EpochSampler:
    """Batches of sample positions for one rank, with resumable state.

    Parameters
    ----------
    num_samples
        Size of an epoch's global order (rows, or token windows).
    batch_size
        Samples per batch on each rank.
    shuffle, seed
        Permutation per ``(seed, epoch)``, or storage order.
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
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        kind: str = "rows",
    ) -> None:
        check_int("batch_size", batch_size)
        check_int("world_size", world_size)
        check_int("rank", rank, low=0, high=world_size - 1)
        self.num_samples = int(num_samples)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.kind = kind
        self.epoch = 0
        #: samples of this epoch's global order consumed by all ranks together
        self.position = 0

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
        return epoch_order(
            self.num_samples, self.seed, self.epoch if epoch is None else epoch, self.shuffle
        )

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
        """Named, JSON-serialisable state: epoch and global position (world-size free)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_samples": self.num_samples,
            "kind": self.kind,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state; strict about missing keys and about a different order.

        A state saved under another world size or batch size continues the same
        global order from the same position (no sample repeated or skipped).
        """
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"loader state is missing key(s) {missing}; got {sorted(state)}.")
        for key, mine in (
            ("seed", self.seed),
            ("shuffle", self.shuffle),
            ("num_samples", self.num_samples),
            ("kind", self.kind),
        ):
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

    def __getitem__(self, s: slice) -> np.ndarray:
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise TypeError("mixture positions are read in contiguous slices")
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
