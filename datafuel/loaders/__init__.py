"""Shard format (writer, reader, token streams) and the training-loop loader."""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._parts import start_shard_set, write_manifest, write_shard
from ._reader import ShardSet
from ._sampler import EpochSampler
from ._schema import Field, bytes_field, fixed, ragged
from ._stats import StarvationReport
from ._tokens import TokenStream
from ._transform import BatchInfo, Transform
from ._writer import ShardWriter, write_shards

if _typing.TYPE_CHECKING:
    from ._dataset import ShardDataset
    from ._loader import Loader

# The torch-facing pieces load on first use, so reading or writing shards (and the
# `datafuel` command's start-up) does not pay for importing torch.
_LAZY = {"Loader": "._loader", "ShardDataset": "._dataset"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchInfo",
    "EpochSampler",
    "Field",
    "Loader",
    "ShardDataset",
    "ShardSet",
    "ShardWriter",
    "StarvationReport",
    "TokenStream",
    "Transform",
    "bytes_field",
    "fixed",
    "ragged",
    "start_shard_set",
    "write_manifest",
    "write_shard",
    "write_shards",
]
