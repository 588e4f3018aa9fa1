"""The local engine: units run in this process, one ``ShardWriter`` per shard set."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from datafuel.loaders import Field, ShardWriter

from ._base import Engine, ShardSink, UnitFn

__all__ = ["LocalEngine"]


class _LocalSink(ShardSink):
    def __init__(
        self,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        shared: Any,
        **kwargs: Any,
    ) -> None:
        self.directory = directory
        self._fn = fn
        self._shared = shared
        self._writer = ShardWriter(directory, fields, **kwargs)
        self._writer.__enter__()

    def submit(self, payload: Any) -> None:
        self._writer.write(self._fn(self._shared, payload))

    def close(self) -> dict[str, Any]:
        self.manifest = self._writer.close()
        return self.manifest

    def abort(self) -> None:
        self._writer.abort()


class LocalEngine(Engine):
    """Run every unit in this process, in order (what ``--engine local`` means).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import fixed
    >>> def square(shared, rows):
    ...     return {"x": np.arange(*rows, dtype=np.int64) ** 2}
    >>> m = LocalEngine().write_units(tempfile.mkdtemp(), {"x": fixed("int64")}, square,
    ...                               [(0, 3), (3, 5)], shard_bytes=1 << 20)
    >>> m["total_rows"]
    5
    """

    name = "local"

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        *,
        shared: Any = None,
        chunk: int = 256,
    ) -> Iterator[Any]:
        for item in items:
            yield fn(shared, item)

    def shard_sink(
        self,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        *,
        shared: Any = None,
        shard_bytes: int,
        provenance: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        check_finite: bool = True,
    ) -> ShardSink:
        return _LocalSink(
            directory,
            fields,
            fn,
            shared,
            shard_bytes=shard_bytes,
            provenance=provenance,
            metadata=metadata,
            check_finite=check_finite,
        )
