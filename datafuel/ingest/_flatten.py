"""Flatten nested JSON records into ``parent.child`` columns.

Nested objects become dotted columns (``{"location": {"lat": 1}}`` -> ``location.lat``).
Lists are kept as **JSON strings** (``[1, 2]`` -> ``"[1,2]"``), not Arrow lists: a list
column's element type drifts in ways Arrow lists cannot absorb losslessly (ints, then
objects, then mixed), JSON text round-trips every case exactly, and the tabular stage
works on scalar columns anyway. ``json.loads`` gives the list back.

:func:`flatten_record` flattens one record into a dict; :func:`flatten_columns`
flattens a page of records straight into columns (one list per flattened name, in the
order the names first appear), which is what the ingest loop works on: the schema
tracker types a column in one pass over its list and the Parquet part is built from the
lists, with no per-record dict in between. Both give the same names, values and errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from datafuel.errors import SchemaError

__all__ = ["flatten_columns", "flatten_record"]

#: JSON's scalar types: a value of one of these is a leaf, with no ``Mapping`` check
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _collision(key: str) -> SchemaError:
    return SchemaError(
        f"two fields flatten to the same column {key!r}; rename one of them upstream",
        field=key,
    )


def flatten_record(record: Mapping[str, Any], *, sep: str = ".") -> dict[str, Any]:
    """Flatten one JSON object; scalars stay, objects nest into dotted names, lists become JSON.

    An empty object becomes a null. Two paths that flatten to the same name (a key
    ``"a.b"`` beside ``{"a": {"b": ...}}``) raise :class:`~datafuel.errors.SchemaError`.

    Examples
    --------
    >>> flatten_record({"id": 1, "location": {"lat": 47.6, "lon": -122.3}, "tags": ["a"]})
    {'id': 1, 'location.lat': 47.6, 'location.lon': -122.3, 'tags': '["a"]'}
    """
    out: dict[str, Any] = {}
    _walk(record, "", sep, out)
    return out


def _walk(obj: Mapping[str, Any], prefix: str, sep: str, out: dict[str, Any]) -> None:
    for k, v in obj.items():
        key = f"{prefix}{k}" if prefix else (k if type(k) is str else str(k))
        tv = type(v)
        if tv in _SCALARS:
            pass
        elif tv is dict or (tv is not list and isinstance(v, Mapping)):
            if v:
                _walk(v, key + sep, sep, out)
                continue
            v = None
        elif tv is list:
            v = _to_json(v)
        if key in out:
            raise _collision(key)
        out[key] = v


def flatten_columns(
    records: Sequence[Mapping[str, Any]], *, sep: str = "."
) -> dict[str, list[Any]]:
    """``records`` flattened as :func:`flatten_record` does, as columns.

    Each flattened name maps to a list of ``len(records)`` values, ``None`` where a
    record lacks the name; names are in the order they first appear (record by record,
    depth first), as the keys of the records' :func:`flatten_record` dicts taken in turn.
    A name collision raises the same :class:`~datafuel.errors.SchemaError`; the caller
    that wants the failing record's number flattens record by record then.

    Examples
    --------
    >>> flatten_columns([{"id": 1, "loc": {"lat": 2.5}}, {"id": 2, "tags": [1]}])
    {'id': [1, 2], 'loc.lat': [2.5, None], 'tags': [None, '[1]']}
    """
    cols: dict[str, list[Any]] = {}
    for i, rec in enumerate(records):
        _walk_columns(rec, "", sep, cols, i)
    n = len(records)
    for col in cols.values():
        if len(col) < n:
            col.extend([None] * (n - len(col)))
    return cols


def _walk_columns(
    obj: Mapping[str, Any], prefix: str, sep: str, cols: dict[str, list[Any]], i: int
) -> None:
    """Append record ``i``'s leaves under ``obj`` to ``cols`` (padding the gaps with nulls)."""
    scalars = _SCALARS
    for k, v in obj.items():
        key = f"{prefix}{k}" if prefix else (k if type(k) is str else str(k))
        tv = type(v)
        if tv in scalars:
            pass
        elif tv is dict or (tv is not list and isinstance(v, Mapping)):
            if v:
                _walk_columns(v, key + sep, sep, cols, i)
                continue
            v = None
        elif tv is list:
            v = _to_json(v)
        col = cols.get(key)
        if col is None:
            cols[key] = col = [None] * i
        else:
            have = len(col)
            if have != i:
                if have > i:  # this record gave the name a value already
                    raise _collision(key)
                col.extend([None] * (i - have))
        col.append(v)
