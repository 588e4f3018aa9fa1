"""Shard format (writer, reader, token streams) and the training-loop loader."""

from __future__ import annotations

import typing as _typing

from datafuel._lazy import lazy_getattr as _lazy_getattr

from ._mixture import Mixture, Schedule
from ._reader import ShardSet
from ._sampler import EpochBatchSampler, EpochSampler, MixtureSampler
from ._schema import Field, bytes_field, fixed, ragged
from ._stats import StarvationReport
from ._tokens import TokenStream
from ._transform import BatchInfo, Transform
from ._windows import PackedWindows, TokenWindows
from ._writer import ShardWriter, write_shards

if _typing.TYPE_CHECKING:
    from ._dataset import ShardDataset
    from ._loader import Batch, Loader

# The torch-facing pieces load on first use, so reading or writing shards (and the
# `datafuel` command's start-up) does not pay for importing torch.
__getattr__ = _lazy_getattr(
    __name__, {"Batch": "._loader", "Loader": "._loader", "ShardDataset": "._dataset"}
)


__all__ = [
    "Batch",
    "BatchInfo",
    "EpochBatchSampler",
    "EpochSampler",
    "Field",
    "Loader",
    "Mixture",
    "MixtureSampler",
    "PackedWindows",
    "Schedule",
    "ShardDataset",
    "ShardSet",
    "ShardWriter",
    "StarvationReport",
    "TokenStream",
    "TokenWindows",
    "Transform",
    "bytes_field",
    "fixed",
    "ragged",
    "write_shards",
]
