"""Schema unification across pages, with a drift event for every change.

Column types form a small lattice: ``null`` (only nulls seen so far) < ``bool``,
``int``, ``float``, ``string``. Merging two types promotes losslessly where it can —
``int`` + ``float`` -> ``float`` as long as every integer seen fits a float exactly
(|v| <= 2**53) — and otherwise widens to ``string`` (values then hold their JSON text:
``true``, ``17``, ``1.5``). Every new field, missing field and type change is a
:class:`DriftEvent`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

__all__ = ["ARROW_TYPES", "DriftEvent", "SchemaTracker", "cast_column", "merge_types", "value_type"]

ARROW_TYPES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
}

_EXACT_FLOAT_INT = 2**53
_FAST_TYPES: dict[type, str] = {type(None): "null", bool: "bool", float: "float", str: "string"}
_INT64 = 2**63
_NONE = type(None)
_FLOAT_OR_NONE = frozenset({float, _NONE})
_STR_OR_NONE = frozenset({str, _NONE})
#: the type of a column whose values' Python types are exactly these (``None`` aside)
_ONE_KIND: dict[type, str] = {str: "string", float: "float", bool: "bool"}


def value_type(value: Any) -> str:
    """The lattice type of one flattened JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -_INT64 <= value < _INT64 else "string"
    if isinstance(value, float):
        return "float"
    return "string"


def merge_types(a: str, b: str, *, big_int: bool = False) -> str:
    """Smallest type holding both ``a`` and ``b`` without losing information.

    ``big_int`` says an integer beyond 2**53 was seen, so ``int`` + ``float`` cannot
    become ``float`` exactly and widens to ``string``.

    Examples
    --------
    >>> merge_types("int", "float")
    'float'
    >>> merge_types("bool", "int")
    'string'
    """
    if a == b:
        return a
    if a == "null":
        return b
    if b == "null":
        return a
    if {a, b} == {"int", "float"}:
        return "string" if big_int else "float"
    return "string"


@dataclass(frozen=True)
class DriftEvent:
    """One schema change: ``kind`` is ``new_field``, ``missing_field`` or ``type_change``."""

    page: int
    kind: str
    field: str
    type: str | None = None
    old_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _as_json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class SchemaTracker:
    """The unified schema so far; turns pages of flattened rows into Arrow tables.

    Examples
    --------
    >>> t = SchemaTracker()
    >>> t.observe([{"id": 1, "x": 2}], page=0)
    []
    >>> [e.kind for e in t.observe([{"id": 2, "x": 2.5, "y": "a"}], page=1)]
    ['type_change', 'new_field']
    >>> t.columns
    {'id': 'int', 'x': 'float', 'y': 'string'}
    """

    def __init__(self) -> None:
        self.columns: dict[str, str] = {}
        self.big_int: set[str] = set()
        self.absent: set[str] = set()
        self.pages_seen = 0

    def observe(self, rows: Sequence[Mapping[str, Any]], *, page: int) -> list[DriftEvent]:
        """Merge a page's rows into the schema and return its drift events."""
        if not rows:
            return []
        return self._observe_types(page, *_page_types(rows))

    def observe_columns(
        self, columns: Mapping[str, Sequence[Any]], rows: int, *, page: int
    ) -> list[DriftEvent]:
        """:meth:`observe` for a page of ``rows`` records flattened into columns
        (:func:`~datafuel.ingest._flatten.flatten_columns`).

        Each column is typed in one pass over its values; the schema and the events
        are those :meth:`observe` gives for the same page as rows.
        """
        if not rows:
            return []
        page_types: dict[str, str] = {}
        page_big: set[str] = set()
        for key, values in columns.items():
            t, big = column_type(values)
            page_types[key] = t
            if big:
                page_big.add(key)
        return self._observe_types(page, page_types, page_big)

    def _observe_types(
        self, page: int, page_types: dict[str, str], page_big: set[str]
    ) -> list[DriftEvent]:
        events = self._merge(page, page_types, page_big)
        events += self._mark_absent(page, page_types)
        self.pages_seen += 1
        return events

    def _merge(self, page: int, page_types: dict[str, str], page_big: set[str]) -> list[DriftEvent]:
        """Widen the columns by one page's types: ``new_field`` and ``type_change`` events."""
        first = self.pages_seen == 0
        events: list[DriftEvent] = []
        for key, t in page_types.items():
            big = key in page_big or key in self.big_int
            if key not in self.columns:
                self.columns[key] = t
                if not first:
                    events.append(DriftEvent(page, "new_field", key, type=t))
            else:
                old = self.columns[key]
                new = merge_types(old, t, big_int=big)
                if new != old:
                    self.columns[key] = new
                    events.append(DriftEvent(page, "type_change", key, type=new, old_type=old))
            if key in page_big:
                self.big_int.add(key)
        return events

    def _mark_absent(self, page: int, page_types: dict[str, str]) -> list[DriftEvent]:
        """A ``missing_field`` event for each column that this page stops sending."""
        events: list[DriftEvent] = []
        for key in self.columns:
            if key in page_types:
                self.absent.discard(key)
            elif key not in self.absent:
                self.absent.add(key)
                events.append(DriftEvent(page, "missing_field", key, type=self.columns[key]))
        return events

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(name, ARROW_TYPES[t]) for name, t in self.columns.items()])

    def to_table(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """Rows as a table with every column of the schema so far (absent -> null)."""
        arrays = []
        for name, t in self.columns.items():
            values = [row.get(name) for row in rows]
            arrays.append(_column(values, t))
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema)

    def table_from_columns(self, pages: Sequence[tuple[Mapping[str, list[Any]], int]]) -> pa.Table:
        """:meth:`to_table` for pages flattened into columns: ``(columns, rows)`` each,
        concatenated in order; the same table as :meth:`to_table` on the pages' rows."""
        arrays = []
        for name, t in self.columns.items():
            values: list[Any] = []
            for cols, n in pages:
                col = cols.get(name)
                values += col if col is not None else [None] * n
            arrays.append(_column(values, t))
        return pa.Table.from_arrays(arrays, schema=self.arrow_schema)

    def state_dict(self) -> dict[str, Any]:
        return {
            "columns": dict(self.columns),
            "big_int": sorted(self.big_int),
            "absent": sorted(self.absent),
            "pages_seen": self.pages_seen,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.columns = {str(k): str(v) for k, v in state["columns"].items()}
        self.big_int = set(state["big_int"])
        self.absent = set(state["absent"])
        self.pages_seen = int(state["pages_seen"])


def _column(values: Iterable[Any], t: str) -> pa.Array:
    vals = values if isinstance(values, list) else list(values)
    if t == "null":
        return pa.nulls(len(vals))
    if t == "float":
        if set(map(type, vals)) <= _FLOAT_OR_NONE:  # nothing to convert (no ints)
            return pa.array(vals, type=pa.float64())
        return pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
    if t == "string":
        if set(map(type, vals)) <= _STR_OR_NONE:  # JSON text already
            return pa.array(vals, type=pa.string())
        return pa.array([None if v is None else _as_json_text(v) for v in vals], type=pa.string())
    return pa.array(vals, type=ARROW_TYPES[t])


def cast_column(array: pa.ChunkedArray | pa.Array, t: str) -> pa.Array | pa.ChunkedArray:
    """Cast an older part's column to the final type with the same rules as ``to_table``."""
    target = ARROW_TYPES[t]
    if array.type == target:
        return array
    if t == "string":
        return _column(array.to_pylist(), "string")
    return array.cast(target)


def _page_types(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], set[str]]:
    """Each key's type merged over ``rows``, and the keys holding ints beyond float precision."""
    page_types: dict[str, str] = {}
    page_big: set[str] = set()
    fast = _FAST_TYPES
    for row in rows:
        for key, value in row.items():
            t = fast.get(type(value)) or value_type(value)
            if t == "int" and not -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
                page_big.add(key)
            prev = page_types.get(key)
            if prev != t:
                page_types[key] = (
                    t if prev is None else merge_types(prev, t, big_int=key in page_big)
                )
    return page_types, page_big


def column_type(values: Sequence[Any]) -> tuple[str, bool]:
    """One column's type merged over ``values`` (as :func:`_page_types` merges a key's
    values), and whether it holds an int beyond float precision (|v| > 2**53).

    The Python types present are found in one pass at C speed (``set(map(type, ...))``);
    a column of one JSON type, or of ints and floats all within +-2**53, is typed from
    that set and its int extremes; anything else is typed value by value.

    Examples
    --------
    >>> column_type([1, None, 2.5])
    ('float', False)
    >>> column_type([2**60, 1.5])
    ('string', True)
    """
    kinds = set(map(type, values))
    kinds.discard(_NONE)
    if not kinds:
        return "null", False
    if len(kinds) == 1:
        (kind,) = kinds
        one = _ONE_KIND.get(kind)
        if one is not None:
            return one, False
    if kinds <= _INT_FLOAT:
        ints = values if kinds == _INT_ONLY and None not in values else None
        if ints is None:
            ints = [v for v in values if type(v) is int]
        if not ints or (min(ints) >= -_EXACT_FLOAT_INT and max(ints) <= _EXACT_FLOAT_INT):
            return ("int" if kinds == _INT_ONLY else "float"), False
    return _exact_type(values)


_INT_FLOAT = frozenset({int, float})
_INT_ONLY = frozenset({int})


def _exact_type(values: Iterable[Any]) -> tuple[str, bool]:
    """:func:`column_type` value by value: exactly the rules of :func:`_page_types`."""
    merged: str | None = None
    big = False
    fast = _FAST_TYPES
    for value in values:
        if value is None:
            continue
        t = fast.get(type(value)) or value_type(value)
        if t == "int" and not -_EXACT_FLOAT_INT <= value <= _EXACT_FLOAT_INT:
            big = True
        if merged != t:
            merged = t if merged is None else merge_types(merged, t, big_int=big)
    return merged or "null", big
