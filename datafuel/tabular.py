"""Tables to shard sets: CSV/Parquet -> split -> recipe fitted on train -> shard sets.

:func:`build_table_shards` is what ``datafuel build table`` runs; every flag of the
command is one of its arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from datafuel.errors import ConfigError, InputDataError
from datafuel.loaders import ShardWriter, fixed
from datafuel.split import SPLIT_NAMES, split

__all__ = ["build_table_shards", "read_table"]

_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_WRITE_ROWS = 65536


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


def _prepare_columns(
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


def _one_hot(part: pa.Table, categories: dict[str, list[str]]) -> tuple[np.ndarray, list[str]]:
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


def _target(table: pa.Table, target: str, path: str) -> np.ndarray:
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


def _is_label(col: pa.ChunkedArray, max_categories: int) -> bool:
    """Class labels: a boolean, or an integer column with few distinct values."""
    t = col.type
    if pa.types.is_boolean(t):
        return True
    return pa.types.is_integer(t) and len(col.unique()) <= max_categories


# -- the build -------------------------------------------------------------------------
def build_table_shards(
    input_path: str | Path,
    out: str | Path,
    *,
    target: str | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    split_by: str | None = None,
    split_key: str | None = None,
    time_col: str | None = None,
    drop: Sequence[str] = (),
    max_missing: float = 0.5,
    impute: str = "knn",
    knn_k: int = 5,
    winsorize: tuple[float, float] | None = (0.01, 0.99),
    clip_target: bool = True,
    scale: str = "standard",
    max_categories: int = 20,
    shard_bytes: int = 64 << 20,
    progress: Callable[..., Iterable[Any]] | None = None,
    engine: Any = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Split a table, fit the recipe on train only, and write ``out/{train,val,test}``.

    What ``datafuel build table`` runs. Numeric columns go through the recipe
    (drop sparse rows, impute, winsorize, scale); text columns with at most
    ``max_categories`` distinct values are one-hot encoded (categories from train
    only, unseen values all zeros) and appended after them; any other column is
    refused. The ``split_by``/``split_key``/``time_col`` column is not a feature.
    Returns the summary printed by ``--json``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from datafuel.tabular import build_table_shards
    >>> from importlib.resources import files
    >>> csv = files("datafuel") / "data" / "houses.csv"
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> summary = build_table_shards(str(csv), out, target="price", drop=["id"])
    >>> sorted(p.name for p in out.iterdir())
    ['recipe.json', 'recipe.step1.fit_X.npy', 'split.json', 'test', 'train', 'val']
    """
    # scikit-learn and torch load here, not when the CLI starts
    from datafuel.clean import DropSparseRows, KNNImputer, SimpleImputer, Winsorizer
    from datafuel.clean._base import DatafuelTransformer
    from datafuel.recipe import Recipe
    from datafuel.scale import MinMaxScaler, StandardScaler

    input_path, out = str(input_path), Path(out)
    if impute not in ("knn", "median", "mean", "none"):
        raise ConfigError(f"--impute must be knn, median, mean or none. Got {impute!r}.")
    if scale not in ("standard", "minmax", "none"):
        raise ConfigError(f"--scale must be standard, minmax or none. Got {scale!r}.")
    if not 0 <= max_missing <= 1:
        raise ConfigError(f"--max-missing must be in [0, 1]. Got {max_missing!r}.")
    table = read_table(input_path)
    for col in drop:
        if col not in table.column_names:
            raise InputDataError(
                f"--drop {col!r}: no such column (columns: {table.column_names}).", field=col
            )
    split_col = split_by or split_key or time_col
    # a dropped column can still be what the split is keyed on (it is never a feature)
    table = table.drop_columns([c for c in drop if c != split_col])
    y = _target(table, target, input_path) if target is not None else None
    exclude = [c for c in (target, split_col) if c is not None]
    numeric, categorical = _prepare_columns(table, exclude, max_categories)
    if not numeric and not categorical:
        raise InputDataError(f"{input_path!r} has no feature column left to build from.")

    parts = split(table, fractions, seed=seed, by=split_by, key=split_key, time=time_col)
    train = parts.train
    need = max(2, knn_k if impute == "knn" else 1)
    if train.num_rows < need:
        raise InputDataError(
            f"the train split has {train.num_rows} row(s); at least {need} are needed to fit "
            f"on (input {input_path!r} has {table.num_rows} rows: use more data or a larger "
            "train fraction).",
        )
    categories = {
        c: sorted(
            v for v in train.column(c).cast(pa.string()).unique().to_pylist() if v is not None
        )
        for c in categorical
    }
    steps: list[DatafuelTransformer] = [DropSparseRows(max_missing_ratio=max_missing)]
    if impute == "knn":
        steps.append(KNNImputer(n_neighbors=knn_k))
    elif impute in ("mean", "median"):
        steps.append(SimpleImputer(strategy=impute))
    if winsorize is not None:
        steps.append(Winsorizer(lower=winsorize[0], upper=winsorize[1]))
    if scale == "standard":
        steps.append(StandardScaler())
    elif scale == "minmax":
        steps.append(MinMaxScaler())
    labels = target is not None and _is_label(table.column(target), max_categories)
    target_steps: list[DatafuelTransformer] = []
    if y is not None and winsorize is not None and clip_target and not labels:
        target_steps.append(Winsorizer(lower=winsorize[0], upper=winsorize[1]))
    recipe = Recipe(steps, target_steps=target_steps)
    y_train = None if y is None else y[parts.indices["train"]]
    recipe.fit(train.select(numeric), y_train)

    runner = None
    if engine is not None or ray_address is not None:
        from datafuel.engine import get_engine  # the per-row work as engine tasks (e.g. Ray)

        runner = get_engine(engine, ray_address=ray_address)
    out.mkdir(parents=True, exist_ok=True)
    extra = {
        "input": input_path,
        "target": target,
        "numeric_columns": numeric,
        "categorical_columns": categories,
        "dropped_columns": list(drop),
        "split_column": split_col,
    }
    fingerprint = recipe.save(out / "recipe.json", extra=extra)
    (out / "split.json").write_text(json.dumps(parts.record, sort_keys=True, indent=1) + "\n")

    summary: dict[str, Any] = {
        "out": str(out),
        "split": parts.record,
        "recipe_fingerprint": fingerprint,
        "fit_report": recipe.fit_report_,
        "rows": {},
    }
    for name in SPLIT_NAMES:
        part = parts[name]
        if part.num_rows == 0:
            summary["rows"][name] = 0
            continue
        y_part = None if y is None else y[parts.indices[name]]
        if runner is not None:
            from datafuel.engine._units import write_table_split

            summary["rows"][name] = write_table_split(
                runner,
                out / name,
                part,
                y_part,
                recipe=recipe,
                numeric=numeric,
                categories=categories,
                labels=labels,
                shard_bytes=shard_bytes,
                provenance={"source": input_path, "split": name, "recipe_fingerprint": fingerprint},
                metadata={
                    "columns": numeric + [f"{c}={v}" for c, vs in categories.items() for v in vs],
                    "target": target,
                },
            )
            continue
        x_num, y_out, keep = recipe.transform_rows(part.select(numeric), y_part)
        x_cat, cat_names = _one_hot(part.filter(pa.array(keep)), categories)
        x = np.concatenate([x_num.astype(np.float32), x_cat], axis=1)
        columns = numeric + cat_names
        fields = {"x": fixed("float32", (x.shape[1],))}
        if y_out is not None:
            fields["y"] = fixed("int64" if labels else "float32")
            y_out = y_out.astype(np.int64 if labels else np.float32)
        with ShardWriter(
            out / name,
            fields,
            shard_bytes=shard_bytes,
            provenance={"source": input_path, "split": name, "recipe_fingerprint": fingerprint},
            metadata={"columns": columns, "target": target},
        ) as writer:
            chunks = range(0, len(x), _WRITE_ROWS)
            for s in (
                chunks if progress is None else progress(chunks, desc=f"write {name}", unit="chunk")
            ):
                batch = {"x": x[s : s + _WRITE_ROWS]}
                if y_out is not None:
                    batch["y"] = y_out[s : s + _WRITE_ROWS]
                writer.write(batch)
        summary["rows"][name] = len(x)
    summary["columns"] = numeric + [f"{c}={v}" for c, vs in categories.items() for v in vs]
    return summary
