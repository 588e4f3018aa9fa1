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

    Pages are flattened a column at a time (:func:`_by_columns`: one list comprehension
    and one C-speed type scan per key, about 3x faster than walking record by record);
    a page where two paths meet in one name, or whose records are not all dicts, is
    walked record by record (:func:`_by_records`), which gives the exact first error.

    Examples
    --------
    >>> flatten_columns([{"id": 1, "loc": {"lat": 2.5}}, {"id": 2, "tags": [1]}])
    {'id': [1, 2], 'loc.lat': [2.5, None], 'tags': [None, '[1]']}
    """
    try:
        return _by_columns(records, sep)
    except _Unusual:
        return _by_records(records, sep)


class _Unusual(Exception):
    """The page needs the record-by-record walk (a name reached twice, a non-dict record)."""


class _Missing:
    """The marker of a key a record does not have (unlike a JSON null, it adds no name)."""

    __slots__ = ()


_M = _Missing()
#: a column holding only these types needs no per-value work
_PLAIN = _SCALARS | {_Missing}
_DICTS = frozenset({dict, _Missing})  # (the marker is truthy, as a non-empty dict)


def _by_columns(records: Sequence[Mapping[str, Any]], sep: str) -> dict[str, list[Any]]:
    rows = list(records)
    if not rows:
        return {}
    if set(map(type, rows)) != {dict}:
        raise _Unusual
    cols: dict[str, list[Any]] = {}
    first: dict[str, int] = {}  # the first record giving each name a value
    _columns(rows, "", sep, cols, first)
    if any(first.values()):  # names first seen after record 0: the record-by-record order
        walks: dict[int, dict[str, int]] = {}
        for r in set(first.values()):
            walks[r] = {name: pos for pos, name in enumerate(flatten_record(rows[r], sep=sep))}
        order = sorted(cols, key=lambda name: (first[name], walks[first[name]][name]))
        cols = {name: cols[name] for name in order}
    return cols


def _columns(
    dicts: list[Any], prefix: str, sep: str, cols: dict[str, list[Any]], first: dict[str, int]
) -> None:
    """The columns under ``dicts`` (one mapping or ``_M`` per record) into ``cols``.

    The keys are those of the first mapping, then any others in the order they first
    appear. Mappings all of one size are taken to hold the first one's keys (no per-record
    key comparison) unless a column then shows a record without one of them.
    """
    whole = _M not in dicts  # (identity first: a cheap scan)
    present = dicts if whole else [d for d in dicts if d is not _M]
    absent = len(dicts) - len(present)
    k0 = present[0]
    uniform = len(set(map(len, present))) == 1
    for k in list(k0):
        lacks = _column(k, dicts, whole, prefix, sep, cols, first)
        uniform = uniform and lacks == absent
    if uniform:  # each mapping has as many keys as the first and all of its: the same keys
        return
    seen: dict[Any, None] = dict.fromkeys(k0)
    for d in present:
        for k in d:
            if k not in seen:
                seen[k] = None
                _column(k, dicts, whole, prefix, sep, cols, first)


def _column(
    k: Any,
    dicts: list[Any],
    whole: bool,
    prefix: str,
    sep: str,
    cols: dict[str, list[Any]],
    first: dict[str, int],
) -> int:
    """Key ``k``'s values under ``dicts`` into ``cols`` (a column, or the columns under
    it); the number of records without the key."""
    name = f"{prefix}{k}" if prefix else (k if type(k) is str else str(k))
    vals = (
        [d.get(k, _M) for d in dicts] if whole else [_M if d is _M else d.get(k, _M) for d in dicts]
    )
    kinds = set(map(type, vals))
    lacks = vals.count(_M) if _Missing in kinds else 0
    if kinds <= _PLAIN:
        _add(name, vals, lacks > 0, cols, first)
        return lacks
    if kinds <= _DICTS and all(vals):  # objects (or absent), none empty: no leaf here
        _columns(vals, name + sep, sep, cols, first)
        return lacks
    leaf: list[Any] = []
    subs: list[Any] = []
    leaves = nested = False
    for v in vals:
        tv = type(v)
        if tv in _PLAIN:
            sub = _M
        elif tv is dict or (tv is not list and isinstance(v, Mapping)):
            sub, v = (v, _M) if v else (_M, None)  # an empty object is a null
        elif tv is list:
            sub, v = _M, _to_json(v)
        else:
            sub = _M
        leaf.append(v)
        subs.append(sub)
        leaves = leaves or v is not _M
        nested = nested or sub is not _M
    if leaves:
        _add(name, leaf, True, cols, first)
    if nested:
        _columns(subs, name + sep, sep, cols, first)
    return lacks


def _add(
    name: str, vals: list[Any], gaps: bool, cols: dict[str, list[Any]], first: dict[str, int]
) -> None:
    if name in cols:  # two paths meet in one name: collision or not, the walk decides
        raise _Unusual
    if gaps:
        first[name] = next(i for i, v in enumerate(vals) if v is not _M)
        vals = [None if v is _M else v for v in vals]
    else:
        first[name] = 0
    cols[name] = vals


def _by_records(records: Sequence[Mapping[str, Any]], sep: str) -> dict[str, list[Any]]:
    """:func:`flatten_columns` record by record (the reference order and errors)."""
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
