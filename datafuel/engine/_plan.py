"""Canonical work units and the shard cut, computed from record sizes alone.

A build's records are numbered in a canonical order (the order the local engine
writes them: table rows in split order, image files in sorted listing order,
documents in corpus order). Work units are consecutive runs of records in that
order. Each unit is processed independently (transform, decode, tokenize) and
reports the data bytes of each of its output rows; :class:`ShardCutter` then
places the shard boundaries exactly where :class:`~datafuel.loaders.ShardWriter`
would (a shard closes once its data bytes reach ``shard_bytes``: fixed rows, plus
variable-length items, plus 8 bytes per offset), so shard ``k`` can be written by
any worker from the rows the cutter assigns to it and the result is the local
engine's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datafuel._checks import check_int
from datafuel.errors import SchemaError
from datafuel.loaders import Field

__all__ = ["ShardCutter", "ShardPlan", "row_bytes", "unit_ranges"]


def unit_ranges(n: int, unit_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` record ranges of ``unit_rows`` records (the last may be short).

    >>> unit_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    check_int("unit_rows", unit_rows)
    return [(s, min(n, s + unit_rows)) for s in range(0, n, unit_rows)]


def row_bytes(fields: Mapping[str, Field], batch: Mapping[str, Any]) -> np.ndarray:
    """Data bytes of each row of ``batch`` as ``ShardWriter`` counts them for its cut.

    Fixed fields count ``itemsize x prod(shape)``; ragged and bytes fields count their
    items times the item size plus 8 bytes for the row's offset.

    >>> from datafuel.loaders import fixed, ragged
    >>> row_bytes({"x": fixed("float32", 3), "t": ragged("uint16")},
    ...           {"x": np.zeros((2, 3), np.float32), "t": [np.zeros(5, np.uint16), np.zeros(0, np.uint16)]}).tolist()
    [30, 20]
    """
    total: np.ndarray | None = None
    n: int | None = None
    for name, spec in fields.items():
        if name not in batch:
            raise SchemaError(f"the batch has no field {name!r}.", field=name)
        values = batch[name]
        if spec.kind == "fixed":
            m = len(values)
            per = np.full(m, spec.row_bytes, np.int64)
        else:
            per = np.fromiter((len(v) for v in values), np.int64, count=len(values))
            m = len(per)
            per = per * spec.itemsize + 8
        if n is not None and m != n:
            raise SchemaError(f"field {name!r} has {m} rows but the batch has {n}.", field=name)
        n = m
        total = per if total is None else total + per
    return total if total is not None else np.zeros(0, np.int64)


@dataclass
class ShardPlan:
    """Shard ``number`` holds rows ``first_row ..`` made of ``pieces``: ``(unit, start, stop)``."""

    number: int
    first_row: int
    rows: int = 0
    pieces: list[tuple[int, int, int]] = field(default_factory=list)


class ShardCutter:
    """Feed each unit's row sizes in unit order; get back the shards that closed.

    Parameters
    ----------
    shard_bytes
        As given to ``ShardWriter``: a shard closes once its data bytes reach this.

    Examples
    --------
    >>> c = ShardCutter(100)
    >>> [(s.number, s.pieces) for s in c.feed(0, np.array([60, 60, 60]))]
    [(0, [(0, 0, 2)])]
    >>> [(s.number, s.pieces) for s in c.feed(1, np.array([50]))]
    [(1, [(0, 2, 3), (1, 0, 1)])]
    >>> c.finish() is None
    True
    """

    def __init__(self, shard_bytes: int) -> None:
        self.shard_bytes = check_int("shard_bytes", shard_bytes)
        self.rows = 0  # rows placed so far
        self._size = 0  # data bytes of the open shard
        self._open: ShardPlan | None = None
        self._next_number = 0

    def feed(self, unit: int, sizes: Sequence[int] | np.ndarray) -> list[ShardPlan]:
        """Place the rows of ``unit`` (``sizes[i]`` data bytes each); return closed shards."""
        sizes = np.asarray(sizes, dtype=np.int64)
        closed: list[ShardPlan] = []
        n = len(sizes)
        start = 0
        while start < n:
            cum = np.cumsum(sizes[start:]) + self._size
            over = np.flatnonzero(cum >= self.shard_bytes)
            stop = start + int(over[0]) + 1 if over.size else n
            if self._open is None:
                self._open = ShardPlan(self._next_number, self.rows)
                self._next_number += 1
            self._open.pieces.append((unit, start, stop))
            self._open.rows += stop - start
            self.rows += stop - start
            self._size = int(cum[stop - start - 1])
            if over.size:
                closed.append(self._open)
                self._open = None
                self._size = 0
            start = stop
        return closed

    def finish(self) -> ShardPlan | None:
        """The last, partly filled shard (``None`` when the rows ended on a cut)."""
        last, self._open = self._open, None
        self._size = 0
        return last

    @property
    def open_first_unit(self) -> int | None:
        """The unit of the open shard's first row (its rows are still needed), if any."""
        return self._open.pieces[0][0] if self._open is not None else None

    @property
    def shards(self) -> int:
        """Shards started so far."""
        return self._next_number
