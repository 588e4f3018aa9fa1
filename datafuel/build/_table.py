"""``build.table``: CSV/Parquet -> split -> recipe fitted on train -> shard sets.

What ``datafuel build table`` runs; every flag of the command is one of its arguments.
The unit of work is a run of :data:`TABLE_UNIT_ROWS` consecutive rows of one split:
the fitted recipe's transform plus the one-hot columns (rows are independent once
the recipe is fitted), so any engine writes the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from datafuel._lock import locked
from datafuel.engine import Engine, unit_ranges
from datafuel.errors import ConfigError, InputDataError
from datafuel.loaders import Field, bytes_field, fixed
from datafuel.split import SPLIT_NAMES, Split, split

from ._common import (
    Progress,
    Timer,
    clear_split,
    engine_for,
    make_summary,
    prepare_out,
    report,
    write_split_record,
)
from ._dedup import DedupOutcome, check_keep, resolve_dedup, write_dedup_report
from ._remote_out import is_remote, run_remote
from ._tablecols import (
    categories_of,
    is_label,
    keep_field_name,
    one_hot,
    prepare_columns,
    raw_target,
    read_source,
    refuse_id_like,
    row_runs,
    target_values,
)
from ._tablesteps import STATE_KEY, ColumnSteps

if TYPE_CHECKING:
    from datafuel.recipe import Recipe

__all__ = ["TABLE_UNIT_ROWS", "table", "table_unit"]

#: Table rows per work unit.
TABLE_UNIT_ROWS = 65536


@dataclass
class _Columns:
    """What the table holds once read: the features by kind, the target, the split column."""

    table: pa.Table
    y: np.ndarray | None
    numeric: list[str]
    categorical: list[str]
    split_col: str | None
    #: the target as read (int64 or its float dtype): what val and test get, unchanged
    y_raw: np.ndarray | None = None
    #: --keep columns -> their shard field
    keep: dict[str, str] = field(default_factory=dict)
    #: drift-widened text columns read back as numbers -> their type
    coerced: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Unit:
    """What a unit needs beyond the shared recipe: whether its targets are clipped
    (train only, and only when the recipe has target steps) and the --keep fields."""

    clip_target: bool
    keep: tuple[tuple[str, str], ...] = ()


def _kept_fields(kept: pa.Table, keep: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The --keep columns of the kept rows, unchanged: numbers as themselves, text as UTF-8."""
    out: dict[str, Any] = {}
    for col, name in keep:
        values = kept.column(col)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            out[name] = [v.encode("utf-8") for v in values.to_pylist()]
        else:
            out[name] = np.ascontiguousarray(values.to_numpy(zero_copy_only=False))
    return out


def table_unit(shared: tuple[Any, ...], payload: tuple[Any, ...]) -> dict[str, Any]:
    """Recipe transform + one-hot of a run of rows: ``{"x": float32, "y": ...}``.

    ``payload`` is ``(rows, targets)`` or ``(rows, targets, _Unit)``; without a
    ``_Unit`` no target is clipped and no column is kept.
    """
    recipe, numeric, categories, labels = shared[:4]
    steps: ColumnSteps | None = shared[4] if len(shared) > 4 else None  # --categorical codes...
    part, y_part = payload[:2]
    unit: _Unit = payload[2] if len(payload) > 2 else _Unit(clip_target=False)
    x_in = part.select(numeric) if steps is None else steps.numeric_input(part, numeric)
    # only train targets go through the target steps; val and test ones are written as read
    x_num, y_out, keep = recipe.transform_rows(x_in, y_part if unit.clip_target else None)
    x_cat, _ = one_hot(part.filter(pa.array(keep)), categories)
    batch = {"x": np.concatenate([x_num.astype(np.float32), x_cat], axis=1)}
    if steps is not None:
        mask = pa.array(keep)
        x_more, more = steps.unit_parts(x_in.filter(mask), part.filter(mask))
        batch = {"x": np.concatenate([batch["x"], x_more], axis=1), **more}
    if unit.keep:
        batch.update(_kept_fields(part.filter(pa.array(keep)), unit.keep))
    if y_part is not None:
        y_out = y_out if unit.clip_target else y_part[keep]
        batch["y"] = y_out.astype(np.int64 if labels else np.float32)
    return batch


def _check_options(impute: str, scale: str, max_missing: float) -> None:
    if impute not in ("knn", "median", "mean", "none"):
        raise ConfigError(f"--impute must be knn, median, mean or none. Got {impute!r}.")
    if scale not in ("standard", "minmax", "none"):
        raise ConfigError(f"--scale must be standard, minmax or none. Got {scale!r}.")
    if not 0 <= max_missing <= 1:
        raise ConfigError(f"--max-missing must be in [0, 1]. Got {max_missing!r}.")


def _read_columns(
    path: str,
    target: str | None,
    drop: Sequence[str],
    split_col: str | None,
    max_categories: int,
    steps: ColumnSteps | None = None,
    *,
    keep: Sequence[str] = (),
    allow_id: Sequence[str] = (),
    drop_missing_target: bool = False,
) -> _Columns:
    # dropped from every part before they are merged, so --drop gets past a column
    # whose types the parts disagree on; a dropped column can still be what the split
    # is keyed on (it is never a feature)
    source = read_source(path, drop=[c for c in drop if c != split_col])
    table = source.table
    y = (
        target_values(table, target, path, allow_missing=drop_missing_target)
        if target is not None
        else None
    )
    kept = keep_columns(table, keep, target, drop)
    exclude = [c for c in (target, split_col, *kept) if c is not None]
    refuse_id_like(table, exclude, allow_id)
    steps = steps or ColumnSteps()
    exclude += steps.date_columns(table, exclude)  # --expand-dates
    numeric, categorical = prepare_columns(table, exclude, steps.category_limit(max_categories))
    categorical = steps.sort_text(table, categorical, max_categories)  # onehot; codes kept there
    if not numeric and not categorical and not steps.codes and not steps.dates:
        raise InputDataError(f"{path!r} has no feature column left to build from.")
    y_raw = raw_target(table, target) if target is not None else None
    return _Columns(table, y, numeric, categorical, split_col, y_raw, kept, dict(source.coerced))


def keep_columns(
    table: pa.Table, keep: Sequence[str], target: str | None, drop: Sequence[str]
) -> dict[str, str]:
    """The --keep columns and their shard fields, refusing what cannot be kept unchanged."""
    fields: dict[str, str] = {}
    for col in keep:
        if col not in table.column_names:
            raise InputDataError(
                f"--keep {col!r}: no such column (columns: {table.column_names}).", field=col
            )
        if col == target or col in drop:
            why = "the target" if col == target else "also given to --drop"
            raise ConfigError(f"--keep {col!r}: the column is {why}; keep it or not, not both.")
        name = keep_field_name(col)
        if name in ("x", "y", "cat") or name in fields.values():
            raise ConfigError(
                f"--keep {col!r}: its shard field would be {name!r}, which another field "
                "already has; rename the column."
            )
        values = table.column(col)
        t = values.type
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
        ):
            raise InputDataError(
                f"--keep {col!r}: the column has type {t}; only numbers, booleans and text "
                "can be kept.",
                field=col,
            )
        if values.null_count:
            row = values.is_null().to_pylist().index(True)
            raise InputDataError(
                f"--keep {col!r}: the column is missing at row {row}; a kept column is "
                "stored unchanged, so it must have a value in every row.",
                field=col,
                row=row,
            )
        fields[col] = name
    return fields


def _recipe(
    *,
    impute: str,
    knn_k: int,
    max_missing: float,
    winsorize: tuple[float, float] | None,
    scale: str,
    clip_target: bool,
) -> Recipe:
    # scikit-learn and torch load here, not when the CLI starts
    from datafuel.clean import DropSparseRows, KNNImputer, SimpleImputer, Winsorizer
    from datafuel.recipe import Recipe
    from datafuel.scale import MinMaxScaler, StandardScaler

    steps: list[Any] = [DropSparseRows(max_missing_ratio=max_missing)]
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
    target_steps = []
    if winsorize is not None and clip_target:
        target_steps.append(Winsorizer(lower=winsorize[0], upper=winsorize[1]))
    return Recipe(steps, target_steps=target_steps)


def _rows(y: np.ndarray | None, parts: Split, name: str) -> np.ndarray | None:
    return None if y is None else y[parts.indices[name]]


def _save_recipe(
    recipe: Recipe,
    out: Path,
    path: str,
    target: str | None,
    drop: Sequence[str],
    cols: _Columns,
    categories: Mapping[str, list[str]],
    steps: ColumnSteps | None = None,
) -> str:
    """``out/recipe.json`` with what the columns were; returns its fingerprint."""
    return recipe.save(
        out / "recipe.json",
        extra={
            "input": path,
            "target": target,
            "numeric_columns": cols.numeric,
            "categorical_columns": dict(categories),
            "dropped_columns": list(drop),
            "split_column": cols.split_col,
            # only when the build kept some: a build without --keep writes the bytes it did
            **({"keep_columns": list(cols.keep)} if cols.keep else {}),
            **({STATE_KEY: steps.state()} if steps is not None and steps.active else {}),
        },
    )


def _check_train_rows(parts: Split, need: int, path: str, total: int) -> None:
    if parts.train.num_rows < need:
        raise InputDataError(
            f"the train split has {parts.train.num_rows} row(s); at least {need} are needed "
            f"to fit on (input {path!r} has {total} rows: use more data or a larger train "
            "fraction).",
        )


def _drop_missing_target(parts: Split, y: np.ndarray | None) -> tuple[Split, dict[str, int]]:
    """Each split without its rows whose target is missing or not finite, and how many.

    The split is made first, on every row, so dropping never moves a row to another
    split. Without ``--drop-missing-target`` such a row was already refused on reading.
    """
    counts = {name: 0 for name in SPLIT_NAMES}
    if y is None or np.isfinite(y).all():
        return parts, counts
    tables, indices = {}, {}
    for name in SPLIT_NAMES:
        ok = np.isfinite(y[parts.indices[name]])
        counts[name] = int((~ok).sum())
        tables[name] = parts[name].filter(pa.array(ok))
        indices[name] = parts.indices[name][ok]
    return (
        Split(tables["train"], tables["val"], tables["test"], dict(parts.record), indices),
        counts,
    )


def _written_rows(recipe: Recipe, x_in: pa.Table) -> np.ndarray:
    """Mask of the rows of a split that reach the shards: those DropSparseRows keeps.

    Decided as :meth:`Recipe.transform_rows` does (infinities count as missing), without
    running the other steps.
    """
    from datafuel.clean import DropSparseRows

    keep = np.ones(x_in.num_rows, dtype=bool)
    if x_in.num_rows == 0 or x_in.num_columns == 0:
        return keep
    arr = np.column_stack(
        [
            np.asarray(c.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            for c in x_in.columns
        ]
    )
    arr[np.isinf(arr)] = np.nan
    for step in recipe.steps:
        if isinstance(step, DropSparseRows):
            keep[keep] = step.keep_mask(arr[keep])
    return keep


def _split_record(
    parts: Split,
    written: Mapping[str, np.ndarray],
    cols: _Columns,
    missing: Mapping[str, int] | None,
) -> dict[str, Any]:
    """``split.json``: how the split was made, plus which source rows each split holds.

    ``rows[split]`` lists the 0-based source row numbers written to that split, in
    shard order, as runs: an int is one row, ``[start, stop]`` the rows
    ``start..stop-1`` (see :func:`~datafuel.build._tablecols.row_runs`). ``kept``
    names the shard field of each ``--keep`` column, which holds the key per row.
    """
    record = dict(parts.record)
    record["rows"] = {name: row_runs(parts.indices[name][written[name]]) for name in SPLIT_NAMES}
    if cols.keep:
        record["kept"] = dict(cols.keep)
    if missing is not None:
        record["dropped_missing_target"] = dict(missing)
    return record


def _clipped_train_targets(
    recipe: Recipe, y: np.ndarray | None, parts: Split, written: np.ndarray
) -> int:
    """How many written train targets the target steps (``--clip-target``) change."""
    if y is None or not recipe.target_steps:
        return 0
    before = y[parts.indices["train"][written]]
    after = before
    for step in recipe.target_steps:
        after = step.transform(after[:, None])[:, 0]
    return int((after != before).sum())


def _keep_field_specs(cols: _Columns) -> dict[str, Field]:
    """The shard field of each --keep column: text as bytes (UTF-8), numbers as their dtype."""
    return keep_field_specs(cols.table, cols.keep)


def keep_field_specs(table: pa.Table, keep: Mapping[str, str]) -> dict[str, Field]:
    """The shard field of each kept column of ``table`` (column -> field name in ``keep``)."""
    out: dict[str, Field] = {}
    for col, name in keep.items():
        t = table.column(col).type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            out[name] = bytes_field()
        else:
            out[name] = fixed(str(np.dtype(t.to_pandas_dtype())))
    return out


def _unit_payloads(
    part: pa.Table, y_part: np.ndarray | None, unit_rows: int, unit: _Unit
) -> Iterator[tuple[pa.Table, np.ndarray | None, _Unit]]:
    for s, e in unit_ranges(part.num_rows, unit_rows):
        rows = part.take(np.arange(s, e))  # a copy: a slice would ship the whole table to Ray
        yield rows, None if y_part is None else np.ascontiguousarray(y_part[s:e]), unit


def _write_splits(
    runner: Engine,
    out: Path,
    parts: Split,
    cols: _Columns,
    shared: tuple[Any, ...],
    fields: Mapping[str, Field],
    common: Mapping[str, Any],
    on_progress: Progress | None,
    *,
    clip_train: bool = False,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in SPLIT_NAMES:
        part = parts[name]
        if part.num_rows == 0:
            counts[name] = 0
            clear_split(out, name)  # an earlier build's rows must not stay readable there
            continue
        y_part = _rows(cols.y_raw, parts, name)
        unit = _Unit(clip_train and name == "train", tuple(cols.keep.items()))
        manifest = runner.write_units(
            out / name,
            fields,
            table_unit,
            _unit_payloads(part, y_part, TABLE_UNIT_ROWS, unit),
            shared=shared,
            shard_bytes=common["shard_bytes"],
            provenance={**common["provenance"], "split": name},
            metadata=common["metadata"],
            on_rows=report(on_progress, f"write {name}", part.num_rows),
        )
        counts[name] = int(manifest["total_rows"])
    return counts


def _dedup_columns(cols: _Columns, target: str | None, key: Sequence[str]) -> list[str]:
    """The columns rows are compared on: ``key``, else every column that is a feature."""
    if key:
        return list(key)
    skip = {target, cols.split_col, *cols.keep}
    return [c for c in cols.table.column_names if c not in skip]


def _dedup_rows(
    parts: Split, table: pa.Table, method: str, keep: str, columns: list[str], by: str | None
) -> tuple[Split, DedupOutcome]:
    """Clusters of rows equal on ``columns``, each moved to its first row's split.

    Under a group-aware split (``by``) the groups a cluster joins move as one, and
    the record's ``groups`` counts are those of the rows kept in each split.
    """
    from datafuel.dedup import cluster_splits, row_clusters
    from datafuel.split import _key_text, _tag

    clusters = row_clusters(table, columns, method)
    which = np.zeros(table.num_rows, np.int64)
    for k, name in enumerate(SPLIT_NAMES):
        which[parts.indices[name]] = k
    groups = None
    if by is not None:
        values = table.column(by).to_pylist()
        groups = np.array([_key_text(v) if v is not None else "\x00null" for v in values], object)
    after = cluster_splits(which, clusters.labels, groups)
    outcome = DedupOutcome(clusters, which, after, keep)
    if not outcome.found:
        return parts, outcome
    indices = {n: np.flatnonzero((after == k) & outcome.kept) for k, n in enumerate(SPLIT_NAMES)}
    tables = {n: _tag(table.take(pa.array(v)), n) for n, v in indices.items()}
    record = dict(parts.record)
    record["counts"] = {n: int(v.size) for n, v in indices.items()}
    if groups is not None and "groups" in record:  # the groups each split now holds
        record["groups"] = {n: len(set(groups[v].tolist())) for n, v in indices.items()}
    return Split(tables["train"], tables["val"], tables["test"], record, indices), outcome


def _inner(on_progress: Progress) -> Progress:
    """``on_progress`` for a stage inside the fit: named ``fit on train: <stage>``."""
    return lambda stage, n, total: on_progress(f"fit on train: {stage}", n, total)


def _fit(
    parts: Split,
    cols: _Columns,
    steps: ColumnSteps,
    recipe: Recipe,
    on_progress: Progress | None,
) -> tuple[Recipe, dict[str, list[str]]]:
    """Fit the column steps, the recipe and the one-hot categories on the train split only.

    One progress stage for the whole fit (quantiles, statistics): the CLI's bar shows
    its clock moving while it runs, and the train rows when it is done. A KNN
    imputation inside reports its receivers as a stage of its own
    (``fit on train: impute (KNN)``).
    """
    fitted = report(on_progress, "fit on train", parts.train.num_rows)
    steps.fit(parts.train, cols.numeric)
    recipe.fit(
        steps.numeric_input(parts.train, cols.numeric),
        _rows(cols.y, parts, "train"),
        # the long step inside (KNN imputation of the train rows) as its own stage
        on_progress=None if on_progress is None else _inner(on_progress),
    )
    categories = categories_of(parts.train, cols.categorical)
    fitted(parts.train.num_rows)
    return recipe, categories


def _columns_and_fields(
    cols: _Columns, steps: ColumnSteps, categories: Mapping[str, list[str]], labels: bool
) -> tuple[list[str], dict[str, Field]]:
    """The feature column names (metadata) and the shard fields of a table build."""
    columns = steps.columns(cols.numeric, [f"{c}={v}" for c, vs in categories.items() for v in vs])
    fields: dict[str, Field] = {"x": fixed("float32", (len(columns),)), **steps.fields()}
    fields.update(_keep_field_specs(cols))
    if cols.y is not None:
        fields["y"] = fixed("int64" if labels else "float32")
    return columns, fields


def table(
    inputs: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    engine: str | Engine | None = None,
    on_progress: Progress | None = None,
    target: str | None = None,
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
    categorical: str | Mapping[str, str] = "onehot",
    missing_indicators: bool = False,
    expand_dates: bool = False,
    shard_bytes: int = 64 << 20,
    overwrite: bool = False,
    keep: Sequence[str] = (),
    allow_id: Sequence[str] = (),
    drop_missing_target: bool = False,
    dedup: str | None = None,
    dedup_keep: str = "all",
    dedup_key: Sequence[str] = (),
    stage_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Split a table, fit the recipe on train only, and write ``out/{train,val,test}``.

    What ``datafuel build table`` runs. ``inputs`` is a CSV or Parquet file, or a
    directory of parts (ingest output). Numeric columns go through the recipe (drop
    sparse rows, impute, winsorize, scale); text columns with at most
    ``max_categories`` distinct values are one-hot encoded (categories from train
    only, unseen values all zeros) and appended after them; any other column is
    refused. The ``split_by``/``split_key``/``time_col`` column is not a feature.
    Off by default (see :mod:`datafuel.build._tablesteps`): ``categorical="codes"``
    (or ``{column: "codes"}``) writes int64 category codes in field ``cat`` instead of
    one-hot (train vocabularies, 0 for unknown or missing, cardinalities in the
    manifest metadata, no ``max_categories`` limit); ``missing_indicators`` appends a
    0/1 column per feature missing somewhere in train; ``expand_dates`` turns
    timestamp/date columns into year, month, day, day of week and elapsed days.
    ``dedup`` is ``"exact"`` by default (``"none"`` turns it off; tables have no
    ``"near"``): rows equal on every feature column (or on the ``dedup_key``
    columns; the target is not compared) form a cluster that goes to its first
    row's split, whole groups moving with it under ``split_by``;
    ``dedup_keep="one"`` writes only that first row. ``dedup.json`` reports them
    (see :mod:`datafuel.build._dedup`).
    Returns the common build summary plus ``split``, ``fit_report`` and ``columns``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from importlib.resources import files
    >>> from datafuel import build
    >>> csv = files("datafuel") / "data" / "houses.csv"
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> summary = build.table(str(csv), out, target="price", drop=["id"])
    >>> sorted(p.name for p in out.iterdir())
    ['.datafuel.lock', 'recipe.json', 'recipe.step1.fit_X.npy', 'split.json', 'test', 'train', 'val']
    >>> summary["counts"]["train"] > summary["counts"]["val"] > 0
    True
    """
    if is_remote(out):  # a bucket: built in a local stage, uploaded as it is finished
        return run_remote(table, locals())
    timer = Timer()
    path, out = str(inputs), Path(out)
    _check_options(impute, scale, max_missing)
    method, explicit = resolve_dedup(dedup, "table")
    check_keep(dedup_keep)
    steps = ColumnSteps(categorical, missing_indicators, expand_dates)
    # one build at a time into out: a second gets LockedError naming this process
    with locked(out, "build"), engine_for(engine) as runner:
        prepare_out(out, "table", overwrite=overwrite)  # another kind of build: refused
        cols = _read_columns(
            path,
            target,
            drop,
            split_by or split_key or time_col,
            max_categories,
            steps,
            keep=keep,
            allow_id=allow_id,
            drop_missing_target=drop_missing_target,
        )
        parts = split(cols.table, fractions, seed=seed, by=split_by, key=split_key, time=time_col)
        outcome = None
        if method != "none":
            columns_compared = _dedup_columns(cols, target, dedup_key)
            parts, outcome = _dedup_rows(
                parts, cols.table, method, dedup_keep, columns_compared, split_by
            )
        parts, missing = _drop_missing_target(parts, cols.y)
        _check_train_rows(parts, max(2, knn_k if impute == "knn" else 1), path, cols.table.num_rows)
        labels = target is not None and is_label(cols.table.column(target), max_categories)
        recipe, categories = _fit(
            parts,
            cols,
            steps,
            _recipe(
                impute=impute,
                knn_k=knn_k,
                max_missing=max_missing,
                winsorize=winsorize,
                scale=scale,
                clip_target=clip_target and cols.y is not None and not labels,
            ),
            on_progress,
        )
        timer.lap("fit")
        out.mkdir(parents=True, exist_ok=True)
        fingerprint = _save_recipe(recipe, out, path, target, drop, cols, categories, steps)
        written = {
            name: _written_rows(recipe, steps.numeric_input(parts[name], cols.numeric))
            for name in SPLIT_NAMES
        }
        record = _split_record(parts, written, cols, missing if drop_missing_target else None)
        dedup_info = None
        if outcome is not None and (explicit or outcome.found):
            write_dedup_report(out, outcome, kind="table", unit="row", describe=int)
            dedup_info = record["dedup"] = outcome.split_entry()
        write_split_record(out, record)
        clipped = _clipped_train_targets(recipe, cols.y, parts, written["train"])
        columns, fields = _columns_and_fields(cols, steps, categories, labels)
        counts = _write_splits(
            runner,
            out,
            parts,
            cols,
            (recipe, list(cols.numeric), categories, labels, *([steps] if steps.active else [])),
            fields,
            {
                "shard_bytes": shard_bytes,
                "provenance": {"source": path, "recipe_fingerprint": fingerprint},
                "metadata": {"columns": columns, "target": target, **steps.metadata()},
            },
            on_progress,
            clip_train=bool(recipe.target_steps),
        )
        timer.lap("write")
    return make_summary(
        "table",
        out,
        counts=counts,
        fitted={"recipe.json": fingerprint},
        skipped=cols.table.num_rows - sum(counts.values()),
        engine=runner,
        seconds=timer.seconds(),
        split=record,
        coerced_columns=dict(cols.coerced),
        clipped_train_targets=clipped,
        dropped_missing_target=missing,
        recipe_fingerprint=fingerprint,
        dedup=dedup_info,
        fit_report=recipe.fit_report_,
        columns=columns,
        **({"column_steps": steps.summary()} if steps.active else {}),
    )
