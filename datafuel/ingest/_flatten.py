"""Flatten nested JSON records into ``parent.child`` columns.

Nested objects become dotted columns (``{"location": {"lat": 1}}`` -> ``location.lat``).
Lists are kept as **JSON strings** (``[1, 2]`` -> ``"[1,2]"``), not Arrow lists: a list
column's element type drifts in ways Arrow lists cannot absorb losslessly (ints, then
objects, then mixed), JSON text round-trips every case exactly, and the tabular stage
works on scalar columns anyway. ``json.loads`` gives the list back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from datafuel.errors import SchemaError

__all__ = ["flatten_record"]


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


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
        if tv is dict or (tv is not list and isinstance(v, Mapping)):
            if v:
                _walk(v, key + sep, sep, out)
                continue
            v = None
        elif tv is list:
            v = _to_json(v)
        if key in out:
            raise SchemaError(
                f"two fields flatten to the same column {key!r}; rename one of them upstream",
                field=key,
            )
        out[key] = v
