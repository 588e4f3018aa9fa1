"""Shared by the hostile-input property tests: every place in a JSON document, and values to put there."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The key/index path of every node of ``obj``, the root ``()`` first."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += json_paths(v, (*prefix, i))
    return out


def json_values(*special: Any, nan: bool = True) -> st.SearchStrategy[Any]:
    """Any small JSON value (infinities, and NaN when ``nan``), plus the ``special`` ones."""
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=nan)
        | st.text(max_size=8)
    )
    if special:
        leaves = leaves | st.sampled_from(list(special))
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )
