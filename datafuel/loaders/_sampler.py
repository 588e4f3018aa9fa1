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

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from datafuel._checks import check_int
from datafuel.errors import ConfigError

__all__ = ["EpochBatchSampler", "EpochSampler", "epoch_order"]

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
