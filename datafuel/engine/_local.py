"""The local engine: units run on a thread pool in this process, one ``ShardWriter`` per set.

Threads, not processes: the per-record work of every build (recipe transforms in
numpy, libjpeg decodes through Pillow, HF ``tokenizers`` encoding) releases the GIL,
and threads share the fitted state (recipe, tokenizer) without shipping it. Results
are taken in submission order through a bounded window, so the writer sees the rows
in canonical order and the shards are the same bytes at any thread count; at most
``window`` units are in memory at once.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from datafuel._checks import check_int
from datafuel.loaders import Field, ShardWriter

from ._base import (
    Engine,
    RowsCallback,
    ShardCallback,
    ShardSink,
    UnitFn,
    map_chunk,
    unit_row_count,
)

__all__ = ["LocalEngine"]


class _LocalSink(ShardSink):
    def __init__(
        self,
        engine: LocalEngine,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        shared: Any,
        on_rows: RowsCallback | None,
        **kwargs: Any,
    ) -> None:
        self.directory = directory
        self._engine = engine
        self._fn = fn
        self._shared = shared
        self._on_rows = on_rows
        self._pending: deque[Future[Mapping[str, Any]]] = deque()
        self._writer = ShardWriter(directory, fields, **kwargs)
        self._writer.__enter__()

    def submit(self, payload: Any) -> None:
        self._pending.append(self._engine._submit(self._fn, self._shared, payload))
        while len(self._pending) > self._engine.window:
            self._write_next()

    def _write_next(self) -> None:
        batch = self._pending.popleft().result()
        self._writer.write(batch)
        if self._on_rows is not None:
            self._on_rows(unit_row_count(batch))

    def close(self) -> dict[str, Any]:
        if self.manifest is not None:
            return self.manifest
        while self._pending:
            self._write_next()
        self.manifest = self._writer.close()
        return self.manifest

    def abort(self) -> None:
        while self._pending:  # let queued units go; wait for the running ones
            fut = self._pending.popleft()
            if not fut.cancel():
                fut.exception()
        self._writer.abort()


class LocalEngine(Engine):
    """Run every unit on a thread pool in this process (what ``--engine local`` means).

    Parameters
    ----------
    threads
        Worker threads (default: the CPUs of this machine). ``1`` still runs units
        on one worker thread, in order.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import fixed
    >>> def square(shared, rows):
    ...     return {"x": np.arange(*rows, dtype=np.int64) ** 2}
    >>> with LocalEngine(threads=2) as engine:
    ...     m = engine.write_units(tempfile.mkdtemp(), {"x": fixed("int64")}, square,
    ...                            [(0, 3), (3, 5)], shard_bytes=1 << 20)
    >>> m["total_rows"]
    5
    """

    name = "local"
    reports_shards = True

    def __init__(self, threads: int | None = None) -> None:
        self.threads = check_int("threads", threads, none_ok=True) or (os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"LocalEngine(threads={self.threads})"

    @property
    def window(self) -> int:
        """Units in flight at most (per map or shard set)."""
        return 2 * self.threads

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="datafuel-engine")
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        *,
        shared: Any = None,
        chunk: int = 256,
    ) -> Iterator[Any]:
        chunks = [items[s : s + chunk] for s in range(0, len(items), chunk)]
        pending: deque[Future[list[Any]]] = deque()
        nxt = 0
        try:
            while nxt < len(chunks) or pending:
                while nxt < len(chunks) and len(pending) < self.window:
                    pending.append(self._submit(map_chunk, fn, shared, chunks[nxt]))
                    nxt += 1
                yield from pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

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
        on_shard: ShardCallback | None = None,
    ) -> ShardSink:
        """A sink feeding one ``ShardWriter``; ``on_shard`` is told of each shard it finishes.

        ``on_shard(entry)`` runs on the thread that submits and closes the sink, right
        after the writer synced that shard's files (see ``ShardWriter(on_shard=...)``).
        """
        return _LocalSink(
            self,
            directory,
            fields,
            fn,
            shared,
            on_rows,
            shard_bytes=shard_bytes,
            provenance=provenance,
            metadata=metadata,
            check_finite=check_finite,
            on_shard=on_shard,
        )
