"""What a build needs from an engine: an ordered map, and shard sinks fed by work units."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from datafuel.loaders import Field

__all__ = [
    "Engine",
    "Packed",
    "RowsCallback",
    "ShardCallback",
    "ShardSink",
    "ShardUpload",
    "UnitFn",
    "concat_rows",
    "map_chunk",
    "pack_rows",
    "unit_row_count",
]

#: ``fn(shared, payload) -> {field: values}``: the per-record work of one unit. It must
#: be picklable (a module-level function or a ``functools.partial`` of one) and
#: deterministic: a retried unit must give the same rows.
UnitFn = Callable[[Any, Any], Mapping[str, Any]]
#: ``on_rows(n)``: called on the driver as each unit's ``n`` rows are placed (progress bars).
RowsCallback = Callable[[int], None]
#: ``on_shard(entry)``: called on the driver with each shard's manifest entry (``{"rows",
#: "files"}``) once its files are complete in the sink's directory, in shard order.
ShardCallback = Callable[[Mapping[str, Any]], None]


def unit_row_count(batch: Mapping[str, Any]) -> int:
    """Rows of one unit's output (every field has as many; the first one is counted)."""
    for values in batch.values():
        return len(values)
    return 0


def map_chunk(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> list[Any]:
    """``[fn(shared, x) for x in items]``: the body of one :meth:`Engine.map` task."""
    return [fn(shared, x) for x in items]


class Packed:
    """Variable-length rows as one flat array plus offsets: cheap to ship between processes.

    A list of thousands of small arrays pickles item by item; one flat array goes
    through Ray's object store without a copy. Rows come back as views.
    """

    __slots__ = ("flat", "kind", "offsets")

    def __init__(self, kind: str, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.kind = kind
        self.flat = flat
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, start: int, stop: int) -> list[Any]:
        o = self.offsets.tolist()
        if self.kind == "bytes":
            mv = memoryview(self.flat.data)
            return [mv[o[i] : o[i + 1]] for i in range(start, stop)]
        return [self.flat[o[i] : o[i + 1]] for i in range(start, stop)]


def pack_rows(fields: Mapping[str, Field], batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` with its variable-length fields as :class:`Packed` where that is lossless.

    A field is packed only when every row already has exactly the declared form (bytes
    for ``bytes`` fields, 1-D arrays of the declared dtype for ``ragged`` ones), so the
    writer's validation sees the same rows and raises the same errors either way.
    """
    out = dict(batch)
    for name, spec in fields.items():
        values = batch.get(name)
        if spec.kind == "fixed" or not isinstance(values, list) or not values:
            continue
        if spec.kind == "bytes":
            if not all(isinstance(v, bytes) for v in values):
                continue
            flat = np.frombuffer(b"".join(values), np.uint8)
            lengths = [len(v) for v in values]
        else:
            dt = np.dtype(spec.dtype)
            if not all(isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype == dt for v in values):
                continue
            flat = np.concatenate(values)
            lengths = [len(v) for v in values]
        offsets = np.zeros(len(values) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out[name] = Packed(spec.kind, flat, offsets)
    return out


def concat_rows(
    fields: Mapping[str, Field],
    batches: Sequence[Mapping[str, Any]],
    ranges: Sequence[tuple[int, int]],
) -> dict[str, Any]:
    """Rows ``[start, stop)`` of each batch, concatenated field by field, in order."""
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        if spec.kind == "fixed":
            parts = [np.asarray(b[name])[s:e] for b, (s, e) in zip(batches, ranges, strict=True)]
            out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        else:
            rows: list[Any] = []
            for b, (s, e) in zip(batches, ranges, strict=True):
                values = b[name]
                rows.extend(values.rows(s, e) if isinstance(values, Packed) else values[s:e])
            out[name] = rows
    return out


@dataclass(frozen=True)
class ShardUpload:
    """Where an engine whose tasks upload their own shards (``uploads_shards``) puts them.

    ``url`` is the credential-free URL of the shard set's folder in the bucket
    (``s3://bucket/prefix/train``); the workers open it with their own environment's
    credentials. ``listed`` maps the names of objects already in that folder to their
    sizes (a listing taken before the set started): a shard file not listed with its
    size is uploaded without asking the bucket first; one listed with its size is
    uploaded unless its ``sha256`` metadata is the file's (one HEAD request).
    """

    url: str
    listed: Mapping[str, int] = field(default_factory=dict)


class ShardSink(ABC):
    """A shard set being written from work units; :meth:`close` writes the manifest.

    Submit payloads in canonical order; each becomes the rows ``fn(shared, payload)``
    of the shard set, in submission order. Use as a context manager: a clean exit
    closes it, an exception aborts it (no manifest).
    """

    directory: os.PathLike[str] | str
    manifest: dict[str, Any] | None = None

    @abstractmethod
    def submit(self, payload: Any) -> None:
        """Queue one work unit."""

    @abstractmethod
    def close(self) -> dict[str, Any]:
        """Wait for every unit, write the manifest last; return it."""

    @abstractmethod
    def abort(self) -> None:
        """Stop without a manifest."""

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()  # the last units finish here, and may fail here
        except BaseException:
            self.abort()
            raise


class Engine(ABC):
    """Where a build's per-record work runs: this process (``local``) or a Ray cluster."""

    name: str = ""
    #: whether :meth:`shard_sink` takes ``upload=ShardUpload(...)``: its tasks then upload
    #: the shard files themselves and the sink's directory receives only the manifest.
    uploads_shards: bool = False
    #: whether :meth:`shard_sink` takes ``on_shard=ShardCallback``: each finished shard is
    #: reported while the set is still being written (what a local build into a bucket
    #: uploads in the background).
    reports_shards: bool = False

    @abstractmethod
    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        *,
        shared: Any = None,
        chunk: int = 256,
    ) -> Iterator[Any]:
        """``fn(shared, item)`` for every item, results in input order."""

    @abstractmethod
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
        on_rows: RowsCallback | None = None,
    ) -> ShardSink:
        """A sink writing the shard set ``directory`` from units processed by ``fn``."""

    def close(self) -> None:  # noqa: B027 - engines that start nothing release nothing
        """Release what the engine started (a local Ray instance)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write_units(
        self,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        payloads: Iterable[Any],
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Write a whole shard set from ``payloads`` (see :meth:`shard_sink`); return the manifest."""
        with self.shard_sink(directory, fields, fn, **kwargs) as sink:
            for p in payloads:
                sink.submit(p)
        return sink.close()  # closed already by the clean exit: returns its manifest
