"""The table build's pieces: reading CSV/Parquet, sorting columns, one-hot, the target.

Pure functions over pyarrow tables; :func:`datafuel.build.table` composes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from datafuel.errors import InputDataError

__all__ = [
    "Source",
    "categories_of",
    "is_label",
    "keep_field_name",
    "one_hot",
    "prepare_columns",
    "raw_target",
    "read_source",
    "read_table",
    "refuse_id_like",
    "row_runs",
    "target_values",
]

_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


# -- reading ---------------------------------------------------------------------------
def _read_one(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() == ".csv":
            table = pacsv.read_csv(
                path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
            )
        elif path.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:
            raise InputDataError(
                f"{str(path)!r} is neither .csv nor .parquet; give a CSV or Parquet file "
                "or a directory of them.",
                path=path,
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        msg = str(exc)
        m = re.search(r"CSV column #(\d+)", msg)
        if m and path.suffix.lower() == ".csv":
            try:
                header = path.read_text(errors="replace").splitlines()[0].split(",")
                col = header[int(m.group(1))].strip().strip('"')
            except (OSError, IndexError):
                col = f"#{m.group(1)}"
            raise InputDataError(
                f"{str(path)!r}: column {col!r} mixes numbers and text ({msg.strip()}).",
                path=path,
                field=col,
            ) from exc
        what = (
            "is empty" if "Empty CSV" in msg or "empty" in msg.lower() else f"cannot be read: {msg}"
        )
        raise InputDataError(f"{str(path)!r} {what}.", path=path) from exc
    if table.num_columns == 0 or table.num_rows == 0:
        raise InputDataError(f"{str(path)!r} is empty (no rows).", path=path)
    return table


@dataclass
class Source:
    """A table as read, and what reading it did.

    ``coerced`` maps each column that ingest's drift had widened to text, and whose
    values all parse losslessly as numbers, to the type it was read back as
    (``"int64"``/``"float64"``).
    """

    table: pa.Table
    coerced: dict[str, str] = field(default_factory=dict)


def read_table(path: str | Path, *, drop: Sequence[str] = ()) -> pa.Table:
    """Read a CSV or Parquet file, or every ``*.csv``/``*.parquet`` in a directory.

    Directory parts are read in name order and concatenated; columns missing from a
    part are filled with nulls and int/float columns are unified (other files, such
    as ingest's ``_state.json``, are ignored). An ingest output directory (one with a
    readable ``_state.json``) is read through :func:`datafuel.ingest.read_ingested`
    with its unified schema, see :func:`read_source`. The ``drop`` columns are removed
    from every part before the parts are merged.
    """
    return read_source(path, drop=drop).table


def read_source(path: str | Path, *, drop: Sequence[str] = ()) -> Source:
    """:func:`read_table`, also saying which drift-widened columns were read back as numbers."""
    path = Path(path)
    if path.is_dir():
        if _ingest_types(path) is not None:
            return _read_ingest_dir(path, drop)
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".parquet")
        )
        if not files:
            raise InputDataError(
                f"directory {str(path)!r} holds no .csv or .parquet file.", path=path
            )
    elif path.exists():
        files = [path]
    else:
        raise InputDataError(f"input {str(path)!r} does not exist.", path=path)
    tables = [_read_one(p) for p in files]
    _check_drop(drop, [n for t in tables for n in t.column_names])
    tables = [t.drop_columns([c for c in drop if c in t.column_names]) for t in tables]
    if len(tables) == 1:
        return Source(tables[0])
    try:
        return Source(pa.concat_tables(tables, promote_options="permissive"))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _incompatible(path, files, tables, exc) from exc


def _check_drop(drop: Sequence[str], names: Sequence[str]) -> None:
    have = list(dict.fromkeys(names))
    for col in drop:
        if col not in have:
            raise InputDataError(f"--drop {col!r}: no such column (columns: {have}).", field=col)


def _incompatible(
    path: Path, files: Sequence[Path], tables: Sequence[pa.Table], exc: Exception
) -> InputDataError:
    """The error for parts that cannot be merged, naming the first column at fault."""
    for name in dict.fromkeys(n for t in tables for n in t.column_names):
        typed = [
            (f, t.schema.field(name).type)
            for f, t in zip(files, tables, strict=True)
            if name in t.column_names
        ]
        first_file, first = typed[0]
        for f, ty in typed[1:]:
            try:
                pa.unify_schemas(
                    [pa.schema([(name, first)]), pa.schema([(name, ty)])],
                    promote_options="permissive",
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return InputDataError(
                    f"the parts of {str(path)!r} cannot be merged: column {name!r} is {first} "
                    f"in {first_file.name!r} but {ty} in {f.name!r}; leave it out with "
                    f"--drop {name} (dropped from every part before merging) or make the "
                    "parts agree.",
                    path=path,
                    field=name,
                )
    return InputDataError(
        f"the parts of {str(path)!r} have columns of incompatible types: {exc}", path=path
    )


# -- ingest output ---------------------------------------------------------------------
_STATE, _DRIFT = "_state.json", "_drift.jsonl"
_INTEGER = re.compile(r"^\s*[-+]?\d+\s*$")
_EXACT_FLOAT_INT = 2**53


def _ingest_types(root: Path) -> dict[str, str] | None:
    """The unified column types in ingest's ``_state.json``; None if it has none."""
    try:
        state = json.loads((root / _STATE).read_text(encoding="utf-8"))
        columns = state["schema"]["columns"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {str(k): str(v) for k, v in columns.items()} if isinstance(columns, dict) else None


def _widened(root: Path) -> dict[str, set[str]]:
    """Columns that drift changed from a number type to ``string``: their number types."""
    out: dict[str, set[str]] = {}
    try:
        lines = (root / _DRIFT).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(ev, dict)
            and ev.get("kind") == "type_change"
            and ev.get("type") == "string"
            and ev.get("old_type") in ("int", "float")
        ):
            out.setdefault(str(ev["field"]), set()).add(str(ev["old_type"]))
    return out


def _read_ingest_dir(root: Path, drop: Sequence[str]) -> Source:
    """An ingest directory through its unified schema, drift-widened numbers read back."""
    from datafuel.errors import DatafuelError
    from datafuel.ingest import read_ingested

    types = _ingest_types(root) or {}
    _check_drop(drop, list(types))
    files = sorted(
        p for p in root.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_"))
    )
    try:
        table = read_ingested(root, drop=drop)
        starts = np.cumsum([0] + [pq.read_metadata(f).num_rows for f in files])
    except (DatafuelError, pa.ArrowException, OSError) as exc:
        raise InputDataError(
            f"ingest output {str(root)!r} cannot be read: {exc}", path=root
        ) from exc
    if table.num_columns == 0 or table.num_rows == 0:
        raise InputDataError(f"ingest output {str(root)!r} is empty (no rows).", path=root)
    coerced = {}
    for name, old in _widened(root).items():
        if name in table.column_names and pa.types.is_string(table.column(name).type):
            col, kind = _numbers_back(table.column(name), name, old, root, files, starts)
            table = table.set_column(table.column_names.index(name), name, col)
            coerced[name] = kind
    return Source(table, coerced)


def _numbers_back(
    col: pa.ChunkedArray,
    name: str,
    old: set[str],
    root: Path,
    files: Sequence[Path],
    starts: np.ndarray,
) -> tuple[pa.Array, str]:
    """A drift-widened text column as numbers again, or the error naming its first non-number."""
    values = col.to_pylist()
    ints = old == {"int"} and all(v is None or _INTEGER.match(v) for v in values)
    out: list[int | float | None] = []
    for row, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        number = _lossless(v, ints)
        if number is None:
            k = int(np.searchsorted(starts, row, side="right")) - 1
            page = _page_of(files[k], k)
            raise InputDataError(
                f"column {name!r} of {str(root)!r} was widened from {'/'.join(sorted(old))} "
                f"to text by drift, and row {row} ({files[k].name}, "
                f"{'pages' if isinstance(page, str) else 'page'} {page}) holds "
                f"{v!r}, which is not losslessly a number; leave the column out with "
                f"--drop {name}, or fix the source.",
                path=files[k],
                field=name,
                row=row,
                page=page,
            )
        out.append(number)
    kind = "int64" if ints else "float64"
    return pa.array(out, type=pa.int64() if ints else pa.float64()), kind


def _lossless(text: str, integer: bool) -> int | float | None:
    """The number ``text`` spells if it is one exactly (int64, or float64), else None."""
    if not _NUMBER.match(text):
        return None
    if integer:
        n = int(text)
        return n if -(2**63) <= n < 2**63 else None
    if _INTEGER.match(text) and abs(int(text)) > _EXACT_FLOAT_INT:
        return None  # a float64 cannot hold this integer exactly
    x = float(text)
    return x if np.isfinite(x) else None


def _page_of(part: Path, position: int) -> int | str:
    """The page a part holds (``part-00000004.parquet`` -> 4), or ``"first-last"`` for a
    group commit of several pages (ingest's ``datafuel.ingest.pages`` metadata)."""
    try:
        meta = pq.read_metadata(part).metadata or {}
    except (pa.ArrowException, OSError):
        meta = {}
    pages = meta.get(b"datafuel.ingest.pages", b"").decode("utf-8", "replace")
    first, _, last = pages.partition("-")
    if first.isdigit() and last.isdigit() and first != last:
        return f"{int(first)}-{int(last)}"
    m = re.match(r"^part-(\d+)\.parquet$", part.name)
    return int(m.group(1)) if m else position


# -- column preparation ----------------------------------------------------------------
def _numeric_text(col: pa.ChunkedArray, name: str) -> None:
    """Refuse a text column whose values are mostly numbers ('strings in a numeric column')."""
    values = [v for v in col.to_pylist() if v is not None and v.strip() != ""]
    if not values:
        return
    numeric = [bool(_NUMBER.match(v)) for v in values]
    if sum(numeric) >= 0.5 * len(values) and not all(numeric):
        bad = next(v for v, ok in zip(values, numeric, strict=True) if not ok)
        row = col.to_pylist().index(bad)
        raise InputDataError(
            f"column {name!r} holds numbers but row {row} holds the text {bad!r}; fix or "
            "remove those values (or --drop the column).",
            field=name,
            row=row,
        )


#: an increasing integer column on fewer rows than this is not taken for a row id
ID_MIN_ROWS = 20
_ID_NAME = re.compile(r"(^|[_\-. ])id$", re.IGNORECASE)
_CAMEL_ID = re.compile(r"[a-z0-9]Id$")


def _id_reason(name: str, col: pa.ChunkedArray) -> str | None:
    """Why ``col`` looks like a row id (its name, or unique increasing integers), or None."""
    if _ID_NAME.search(name) or _CAMEL_ID.search(name):
        return "named like an id"
    if not pa.types.is_integer(col.type) or col.null_count or len(col) < ID_MIN_ROWS:
        return None
    values = np.asarray(col.to_numpy(zero_copy_only=False))
    if bool((np.diff(values) > 0).all()):
        return "unique integers that increase row by row"
    return None


def refuse_id_like(table: pa.Table, exclude: Sequence[str], allow: Sequence[str]) -> None:
    """Refuse a feature column that looks like a row id, naming it and the three ways past.

    A column is id-like when it is named ``id`` or ``*_id`` (``user-id``, ``userId``
    too), or holds unique integers that increase row by row (on at least
    :data:`ID_MIN_ROWS` rows). ``exclude`` (target, split, ``--keep`` columns) and
    ``allow`` (``--allow-id``) are not checked.
    """
    for name in allow:
        if name not in table.column_names:
            raise InputDataError(
                f"--allow-id {name!r}: no such column (columns: {table.column_names}).",
                field=name,
            )
    for name in table.column_names:
        if name in exclude or name in allow:
            continue
        why = _id_reason(name, table.column(name))
        if why is not None:
            raise InputDataError(
                f"column {name!r} looks like a row id ({why}); as a feature a model could "
                f"memorise rows by it. Leave it out (--drop {name}), store it beside the "
                f"features as field {keep_field_name(name)!r} (--keep {name}), or use it as a "
                f"feature anyway (--allow-id {name}).",
                field=name,
            )


def keep_field_name(column: str) -> str:
    """The shard field a ``--keep`` column is stored in: its name, other characters as ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", column)[:64] or "_"


def prepare_columns(
    table: pa.Table, exclude: Sequence[str], max_categories: int
) -> tuple[list[str], list[str]]:
    """Split the feature columns into numeric and low-cardinality text ones."""
    numeric, categorical = [], []
    for name in table.column_names:
        if name in exclude:
            continue
        col = table.column(name)
        t = col.type
        if col.null_count == len(col):
            raise InputDataError(
                f"column {name!r} has no value at all; drop it (--drop {name}).", field=name
            )
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            numeric.append(name)
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
            if pa.types.is_dictionary(t):
                col = col.cast(pa.string())
            _numeric_text(col, name)
            n_distinct = len(col.unique())
            if n_distinct > max_categories:
                raise InputDataError(
                    f"column {name!r} is text with {n_distinct} distinct values, more than "
                    f"--max-categories {max_categories}; drop it (--drop {name}) or encode it "
                    "yourself.",
                    field=name,
                )
            categorical.append(name)
        else:
            raise InputDataError(
                f"column {name!r} has type {t}, which is neither a number nor text; drop it "
                f"(--drop {name}) or convert it to numbers first.",
                field=name,
            )
    return numeric, categorical


def one_hot(part: pa.Table, categories: dict[str, list[str]]) -> tuple[np.ndarray, list[str]]:
    blocks, names = [], []
    for col, values in categories.items():
        raw = part.column(col)
        if not pa.types.is_string(raw.type):
            raw = raw.cast(pa.string())
        v = np.array(raw.to_pylist(), dtype=object)
        for cat in values:
            blocks.append((v == cat).astype(np.float32))
            names.append(f"{col}={cat}")
    if not blocks:
        return np.empty((part.num_rows, 0), np.float32), []
    return np.column_stack(blocks), names


def target_values(
    table: pa.Table, target: str, path: str, *, allow_missing: bool = False
) -> np.ndarray:
    """The target as float64 (what the recipe fits on); missing or infinite is an error
    naming the first such row, unless ``allow_missing`` (they come back as NaN/inf)."""
    if target not in table.column_names:
        raise InputDataError(
            f"target column {target!r} is not in {path!r} (columns: {table.column_names}).",
            field=target,
        )
    col = table.column(target)
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise InputDataError(
            f"target column {target!r} has type {t}; it must be numeric.", field=target
        )
    y = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size and not allow_missing:
        raise InputDataError(
            f"target column {target!r} is missing or not finite in {bad.size} row(s), first "
            f"at row {int(bad[0])}; drop those rows (--drop-missing-target) or fix them.",
            field=target,
            row=int(bad[0]),
        )
    return y


def raw_target(table: pa.Table, target: str) -> np.ndarray:
    """The target as read, for writing unchanged: int64 (booleans too) or the float dtype.

    Missing values of an integer column come back as NaN in float64 (those rows are
    dropped before writing).
    """
    col = table.column(target)
    if col.null_count == 0 and (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
        return np.asarray(col.to_numpy(zero_copy_only=False)).astype(np.int64)
    if pa.types.is_float32(col.type):
        return np.asarray(col.cast(pa.float32()).to_numpy(zero_copy_only=False), np.float32)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def row_runs(rows: np.ndarray) -> list[int | list[int]]:
    """Sorted row numbers as runs: an int for a lone row, ``[start, stop]`` for
    ``start..stop-1``. Back to rows:
    ``[r for x in runs for r in ([x] if isinstance(x, int) else range(*x))]``.

    >>> row_runs(np.array([0, 1, 2, 5, 7, 8]))
    [[0, 3], 5, [7, 9]]
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    out: list[int | list[int]] = []
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        first = int(rows[a])
        out.append(first if b - a == 1 else [first, int(rows[b - 1]) + 1])
    return out


def is_label(col: pa.ChunkedArray, max_categories: int) -> bool:
    """Class labels: a boolean, or an integer column with few distinct values."""
    t = col.type
    if pa.types.is_boolean(t):
        return True
    return pa.types.is_integer(t) and len(col.unique()) <= max_categories


def categories_of(train: pa.Table, categorical: Sequence[str]) -> dict[str, list[str]]:
    """The sorted non-null values of each text column in the train split (its one-hot)."""
    return {
        c: sorted(
            v for v in train.column(c).cast(pa.string()).unique().to_pylist() if v is not None
        )
        for c in categorical
    }
