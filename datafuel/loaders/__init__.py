"""Shard format (writer, reader, token streams) and the training-loop loader."""

from __future__ import annotations

from ._reader import ShardSet
from ._schema import Field, bytes_field, fixed, ragged
from ._tokens import TokenStream
from ._transform import BatchInfo, Transform
from ._writer import ShardWriter, write_shards

__all__ = [
    "BatchInfo",
    "Field",
    "ShardSet",
    "ShardWriter",
    "TokenStream",
    "Transform",
    "bytes_field",
    "fixed",
    "ragged",
    "write_shards",
]
