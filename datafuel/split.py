"""Train/val/test splitting, done before anything is fitted.

:func:`split_indices` is the primitive every ``build`` uses (tables, image files,
documents): it turns a row count and fractions into disjoint index arrays plus a
JSON-serialisable record of how (``split.json``).

:func:`split` splits a table (pyarrow or pandas) four ways: seeded random, stable hash
of a key column (a row keeps its split when the data grows), group-aware (no group in
two splits) and time-ordered (train before val before test). Each part is tagged with
its split name, so :class:`datafuel.Recipe` refuses to be fitted on val or test.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datafuel._checks import check_int
from datafuel._hash import HASH_DESCRIPTION, stable_fraction
from datafuel.errors import ConfigError, InputDataError

__all__ = [
    "SPLIT_NAMES",
    "SPLIT_TAG",
    "Split",
    "check_fractions",
    "split",
    "split_indices",
    "split_tag",
]

SPLIT_NAMES = ("train", "val", "test")

#: schema-metadata key (pyarrow) / ``DataFrame.attrs`` key (pandas) naming a part's split
SPLIT_TAG = "datafuel.split"


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions: three numbers in [0, 1] summing to 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3:
        raise ConfigError(
            f"split fractions must be three numbers (train, val, test). Got {len(fr)}: {fr}."
        )
    if any(not math.isfinite(f) or f < 0 or f > 1 for f in fr):
        raise ConfigError(f"split fractions must each be in [0, 1]. Got {fr} instead.")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1. Got {fr}, which sums to {sum(fr):.6g}.")
    if fr[0] == 0:
        raise ConfigError(
            f"the train fraction must be > 0: everything is fitted on train. Got {fr}."
        )
    return fr[0], fr[1], fr[2]


def _counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Largest-remainder rounding: counts sum to n; a non-zero fraction of n >= 3 gets >= 1 row."""
    raw = np.array(fractions) * n
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    for i in (1, 2):  # tiny splits (0.98/0.01/0.01 of a small table) still get a row
        if fractions[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i] += 1
            counts[0] -= 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def split_indices(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Seeded random split of ``n`` rows into train/val/test index arrays.

    Returns ``({"train": idx, "val": idx, "test": idx}, record)``; each index array
    is sorted (storage order is kept within a split) and the three are disjoint and
    cover ``range(n)``. ``record`` is what ``split.json`` stores.

    >>> parts, record = split_indices(10, (0.8, 0.1, 0.1), seed=0)
    >>> [len(parts[k]) for k in ("train", "val", "test")]
    [8, 1, 1]
    """
    check_int("n", int(n) if isinstance(n, np.integer) else n, low=0)
    fr = check_fractions(fractions)
    counts = _counts(int(n), fr)
    perm = np.random.default_rng(seed).permutation(int(n))
    bounds = np.cumsum((0, *counts))
    parts = {name: np.sort(perm[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SPLIT_NAMES)}
    record = {
        "method": "random",
        "seed": int(seed),
        "fractions": list(fr),
        "counts": dict(zip(SPLIT_NAMES, counts, strict=True)),
        "total": int(n),
    }
    return parts, record


# -- table-level split ----------------------------------------------------------------


@dataclass
class Split:
    """The three parts of a table and the record of how it was split.

    ``train``, ``val`` and ``test`` have the input's type (pyarrow Table or pandas
    DataFrame), keep the input's row order, and carry their split name (see
    :func:`split_tag`). ``indices`` maps each name to the input row indices;
    ``record`` is what ``split.json`` stores.
    """

    train: Any
    val: Any
    test: Any
    record: dict[str, Any]
    indices: dict[str, np.ndarray] = field(repr=False)

    def __getitem__(self, name: str) -> Any:
        if name not in SPLIT_NAMES:
            raise KeyError(name)
        return getattr(self, name)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, part)`` for train, val and test, in that order."""
        for name in SPLIT_NAMES:
            yield name, getattr(self, name)


def split_tag(data: Any) -> str | None:
    """The split name a table was tagged with by :func:`split` (``None`` when untagged)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(data, (pa.Table, pa.RecordBatch)):
        meta = data.schema.metadata or {}
        raw = meta.get(SPLIT_TAG.encode())
        return None if raw is None else raw.decode()
    attrs = getattr(data, "attrs", None)
    if isinstance(attrs, dict):
        tag = attrs.get(SPLIT_TAG)
        return None if tag is None else str(tag)
    return None


def _tag(part: Any, name: str) -> Any:
    import pyarrow as pa

    if isinstance(part, pa.Table):
        meta = dict(part.schema.metadata or {})
        meta[SPLIT_TAG.encode()] = name.encode()
        return part.replace_schema_metadata(meta)
    part.attrs[SPLIT_TAG] = name
    return part


def _column(table: Any, name: str) -> list[Any]:
    import pyarrow as pa

    if isinstance(table, pa.Table):
        if name not in table.column_names:
            raise InputDataError(
                f"column {name!r} is not in the table (columns: {table.column_names}).", field=name
            )
        return table.column(name).to_pylist()
    if name not in table.columns:
        raise InputDataError(
            f"column {name!r} is not in the table (columns: {list(table.columns)}).", field=name
        )
    col = table[name]
    return [
        None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in col.tolist()
    ]


def _key_text(value: Any) -> str:
    """A stable text form of a key value (ints and integral floats alike: ``5``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _assign_by_position(pos: np.ndarray, fr: tuple[float, float, float]) -> np.ndarray:
    """0/1/2 for positions in [0, 1) against the cumulative fractions."""
    return np.searchsorted(np.cumsum(fr)[:2], pos, side="right")


def split(
    table: Any,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
    key: str | None = None,
    by: str | None = None,
    time: str | None = None,
) -> Split:
    """Split a table into train/val/test before anything is fitted.

    Parameters
    ----------
    table : pyarrow.Table or pandas.DataFrame
        The rows to split.
    fractions : three floats summing to 1, default (0.8, 0.1, 0.1)
    seed : int, default 0
        Seeds the random and group permutations and keys the key hash (there an
        int64: ``-2**63 <= seed < 2**63``).
    key : str, optional
        Stable hash split: a row's split depends only on its value in this column
        (text form) and ``seed`` (:data:`datafuel._hash.HASH_DESCRIPTION`), so
        existing rows keep their split when data is added. Counts follow the
        fractions only approximately.
    by : str, optional
        Group-aware split: every row of a group (value of this column; missing
        values form one group) lands in the same split. Groups are shuffled with
        ``seed`` and laid end to end; a group goes where its midpoint falls.
    time : str, optional
        Time-ordered split: rows sorted by this column (stable); the earliest go to
        train, then val, then test. Missing times are refused.

    Returns
    -------
    Split
        ``.train``, ``.val``, ``.test`` (same type as ``table``, tagged with their
        split name), ``.indices`` and ``.record`` (JSON for ``split.json``).

    Examples
    --------
    >>> import pyarrow as pa
    >>> import datafuel
    >>> t = pa.table({"user": [1, 1, 2, 3, 3, 4, 5, 6, 7, 8], "x": [0.0] * 10})
    >>> parts = datafuel.split(t, (0.8, 0.1, 0.1), seed=0, by="user")
    >>> sum(p.num_rows for _, p in parts.items())
    10
    >>> parts.record["method"]
    'group'
    """
    import pyarrow as pa

    fr, n = _check_split_args(table, fractions, key=key, by=by, time=time)
    if key is not None:
        which, record = _split_by_key(table, key, fr, seed)
    elif by is not None:
        which, record = _split_by_group(table, by, n, fr, seed)
    elif time is not None:
        which, record = _split_by_time(table, time, n, fr)
    else:
        which, record = _split_at_random(n, fr, seed)
    indices = {name: np.flatnonzero(which == i) for i, name in enumerate(SPLIT_NAMES)}
    record.update(
        {
            "seed": int(seed),
            "fractions": list(fr),
            "counts": {name: len(idx) for name, idx in indices.items()},
            "total": int(n),
        }
    )
    out = {}
    for name, idx in indices.items():
        part = table.take(pa.array(idx)) if isinstance(table, pa.Table) else table.iloc[idx].copy()
        out[name] = _tag(part, name)
    return Split(out["train"], out["val"], out["test"], record, indices)


def _check_split_args(
    table: Any, fractions: Sequence[float], *, key: str | None, by: str | None, time: str | None
) -> tuple[tuple[float, float, float], int]:
    """The checked fractions and the row count; refuse a non-table, two methods, no rows."""
    import pyarrow as pa

    if not isinstance(table, pa.Table) and not (
        hasattr(table, "iloc") and hasattr(table, "columns")
    ):
        raise ConfigError(
            f"split takes a pyarrow Table or a pandas DataFrame. Got {type(table).__name__}."
        )
    chosen = [name for name, v in (("key", key), ("by", by), ("time", time)) if v is not None]
    if len(chosen) > 1:
        raise ConfigError(f"give at most one of key=, by=, time=. Got {', '.join(chosen)}.")
    fr = check_fractions(fractions)
    n = table.num_rows if isinstance(table, pa.Table) else len(table)
    if n == 0:
        raise InputDataError("cannot split an empty table (0 rows).")
    return fr, n


_Assignment = tuple[np.ndarray, dict[str, Any]]
"""Each row's split (0 train, 1 val, 2 test) and the method's part of the record."""


def _split_by_key(table: Any, key: str, fr: tuple[float, float, float], seed: int) -> _Assignment:
    """Stable hash: a row's split depends only on its key's text form and ``seed``."""
    if isinstance(seed, np.integer):
        seed = int(seed)
    check_int("seed", seed, low=-(2**63), high=2**63 - 1)  # the hash is keyed by an int64
    pos = np.array([stable_fraction(_key_text(v).encode(), seed) for v in _column(table, key)])
    record = {"method": "hash", "column": key, "hash": HASH_DESCRIPTION}
    return _assign_by_position(pos, fr), record


def _split_by_group(
    table: Any, by: str, n: int, fr: tuple[float, float, float], seed: int
) -> _Assignment:
    """Shuffled groups laid end to end; each goes where its midpoint falls."""
    values = [_key_text(v) if v is not None else "\x00null" for v in _column(table, by)]
    groups, inverse = np.unique(np.array(values, dtype=object), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(groups))
    perm = np.random.default_rng(seed).permutation(len(groups))
    start = np.cumsum(np.r_[0, sizes[perm]])[:-1]
    mid = (start + sizes[perm] / 2.0) / n
    group_split = np.empty(len(groups), dtype=np.int64)
    group_split[perm] = _assign_by_position(mid, fr)
    record = {
        "method": "group",
        "column": by,
        "groups": {name: int((group_split == i).sum()) for i, name in enumerate(SPLIT_NAMES)},
    }
    return group_split[inverse], record


def _split_by_time(table: Any, time: str, n: int, fr: tuple[float, float, float]) -> _Assignment:
    """Rows in time order (stable): the earliest to train, then val, then test."""
    values = _column(table, time)
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise InputDataError(
            f"time column {time!r} is missing a value in row {missing[0]}; a time-ordered "
            "split needs every row's time.",
            field=time,
            row=missing[0],
        )
    try:
        order = np.array(sorted(range(n), key=values.__getitem__), dtype=np.int64)
    except TypeError as exc:
        raise InputDataError(
            f"time column {time!r} mixes values that cannot be ordered: {exc}", field=time
        ) from exc
    which = np.empty(n, dtype=np.int64)
    which[order] = np.repeat(np.arange(3), _counts(n, fr))
    return which, {"method": "time", "column": time}


def _split_at_random(n: int, fr: tuple[float, float, float], seed: int) -> _Assignment:
    """:func:`split_indices`, as one split number per row."""
    parts, record = split_indices(n, fr, seed=seed)
    which = np.empty(n, dtype=np.int64)
    for i, name in enumerate(SPLIT_NAMES):
        which[parts[name]] = i
    return which, record


class _CallableModule(types.ModuleType):
    """``datafuel.split`` is this module *and* callable as :func:`split`.

    So ``datafuel.split(table, ...)`` works at the top level while
    ``import datafuel.split`` / ``from datafuel.split import split_indices`` keep
    working for the stages that use the module.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Split:
        return split(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
