"""The table build's pieces: reading CSV/Parquet, sorting columns, one-hot, the target.

Pure functions over pyarrow tables; :func:`datafuel.build.table` composes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from datafuel.errors import InputDataError

__all__ = ["categories_of", "is_label", "one_hot", "prepare_columns", "read_table", "target_values"]

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


def read_table(path: str | Path) -> pa.Table:
    """Read a CSV or Parquet file, or every ``*.csv``/``*.parquet`` in a directory.

    Directory parts are read in name order and concatenated; columns missing from a
    part are filled with nulls and int/float columns are unified (other files, such
    as ingest's ``_state.json``, are ignored).
    """
    path = Path(path)
    if path.is_dir():
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
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputDataError(
            f"the parts of {str(path)!r} have columns of incompatible types: {exc}", path=path
        ) from exc


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


def target_values(table: pa.Table, target: str, path: str) -> np.ndarray:
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
    if bad.size:
        raise InputDataError(
            f"target column {target!r} is missing or not finite in {bad.size} row(s), first "
            f"at row {int(bad[0])}; drop or fix those rows.",
            field=target,
            row=int(bad[0]),
        )
    return y


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
