"""The per-batch transform protocol: how a stage (vision, text) plugs into the Loader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["BatchInfo", "Transform"]


@dataclass(frozen=True)
class BatchInfo:
    """What a transform knows about the batch it is given.

    Attributes
    ----------
    indices
        Global sample indices (rows of the shard set, or window starts of a token
        stream) in batch order.
    epoch, seed
        The loader's epoch and seed; a seeded augmentation draws its randomness from
        ``(seed, epoch, index)`` per sample so that a resumed run repeats it exactly.
    batch_index
        Position of the batch in the epoch, for this rank.
    """

    indices: np.ndarray
    epoch: int
    seed: int
    batch_index: int


@runtime_checkable
class Transform(Protocol):
    """A per-batch callable run in the loader's worker threads.

    It receives the gathered batch (``ShardSet.gather`` output: fixed fields as
    arrays, bytes fields as ``list[bytes]``, ragged fields as ``list[np.ndarray]``)
    and returns a dict of fixed-shape numpy arrays (or CPU tensors), which the loader
    collates into (pinned) buffers and copies to the device. Return the narrowest
    dtype (uint8 pixels): widening and normalising are cheaper on the device.

    ``output_spec`` declares the output before anything runs, so a mismatch fails
    when the loader is built, not mid-epoch: ``{name: (dtype, per-sample shape)}``.
    """

    output_spec: Mapping[str, tuple[str, tuple[int, ...]]]

    def __call__(self, batch: Mapping[str, Any], info: BatchInfo) -> Mapping[str, Any]: ...
