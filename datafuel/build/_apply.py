"""``build.apply``: production data -> the shards a saved table recipe makes of it.

What ``datafuel apply`` runs. The recipe (``recipe.json`` written by
:func:`datafuel.build.table`) is loaded as strictly as always; its ``extra`` says
which columns were numeric, which were one-hot (with their train categories) and,
when the build used them, the column steps (category codes, missing indicators,
date expansion). The new rows go through the build's own unit function, so ``x``
(and ``cat``) have the same columns, order and dtypes as the build's splits; the
target is not needed and not written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datafuel._lock import locked
from datafuel._transformer import found
from datafuel.engine import Engine, unit_ranges
from datafuel.errors import InputDataError, SchemaError
from datafuel.loaders import Field, fixed

from ._common import Progress, Timer, engine_for, make_summary, report
from ._table import TABLE_UNIT_ROWS, _Unit, keep_columns, keep_field_specs, table_unit
from ._tablecols import read_table
from ._tablesteps import STATE_KEY, ColumnSteps

__all__ = ["apply"]


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def _is_date(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) or pa.types.is_date(t))


#: what each kind of feature column must hold, and what an all-missing column becomes
_KINDS = {
    "numeric": (_is_number, "a number", pa.float64()),
    "text": (_is_text, "text", pa.string()),
    "date": (_is_date, "a timestamp or date", pa.timestamp("us")),
}


def _str_list(value: Any, key: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(
            f"recipe {str(path)!r}: extra.{key} must be a list of strings. Found {found(value)}.",
            path=path,
            field=f"extra.{key}",
        )
    return list(value)


def _columns_of(extra: Any, path: Path) -> tuple[list[str], dict[str, list[str]], str | None]:
    """``numeric_columns``, ``categorical_columns`` and ``target`` from the recipe's extra."""
    if not isinstance(extra, dict) or "numeric_columns" not in extra:
        raise InputDataError(
            f"recipe {str(path)!r} was not written by `datafuel build table` (its extra has no "
            "numeric_columns); apply needs a table build's recipe.json.",
            path=path,
        )
    numeric = _str_list(extra["numeric_columns"], "numeric_columns", path)
    cats = extra.get("categorical_columns", {})
    if not isinstance(cats, dict):
        raise SchemaError(
            f"recipe {str(path)!r}: extra.categorical_columns must be an object. "
            f"Found {found(cats)}.",
            path=path,
            field="extra.categorical_columns",
        )
    categories = {str(c): _str_list(v, f"categorical_columns.{c}", path) for c, v in cats.items()}
    target = extra.get("target")
    return numeric, categories, target if isinstance(target, str) else None


def _load(
    path: Path,
) -> tuple[Any, list[str], dict[str, list[str]], ColumnSteps | None, str | None]:
    from datafuel.recipe import Recipe  # scikit-learn loads here, not when the CLI starts

    recipe = Recipe.load(path)
    extra = recipe_extra(path)
    numeric, categories, target = _columns_of(extra, path)
    steps = None
    if STATE_KEY in extra:
        try:
            steps = ColumnSteps.from_state(extra[STATE_KEY], recipe.n_features_in_)
        except (SchemaError, InputDataError) as exc:
            raise type(exc)(f"recipe {str(path)!r}: {exc.message}", path=path) from exc
    expected = [*numeric, *(steps.date_features if steps else [])]
    if recipe.feature_names_ is not None and recipe.feature_names_ != expected:
        raise SchemaError(
            f"recipe {str(path)!r}: its steps were fitted on {recipe.feature_names_}, but its "
            f"extra.numeric_columns (and date features) say {expected}.",
            path=path,
            field="extra.numeric_columns",
        )
    return recipe, numeric, categories, steps, target


def recipe_extra(path: Path) -> Any:
    """The ``extra`` object of a recipe file (what :meth:`Recipe.save` stored beside the steps)."""
    import json

    try:
        return json.loads(path.read_bytes().decode("utf-8")).get("extra")
    except (OSError, ValueError, AttributeError) as exc:  # Recipe.load read it a moment ago
        raise InputDataError(f"cannot read recipe {str(path)!r}: {exc}", path=path) from exc


def _check_columns(table: pa.Table, wanted: dict[str, str], source: str) -> pa.Table:
    """``table`` with every wanted column present and of its kind (all-missing ones cast)."""
    for name, kind in wanted.items():
        ok, what, empty = _KINDS[kind]
        if name not in table.column_names:
            raise InputDataError(
                f"{source!r} has no column {name!r}, which the recipe was fitted on "
                f"({kind} feature); columns: {table.column_names}.",
                field=name,
            )
        t = table.column(name).type
        if pa.types.is_null(t):
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(name).cast(empty))
        elif not ok(t):
            raise InputDataError(
                f"{source!r}: column {name!r} has type {t}, but the recipe was fitted on it as "
                f"{what}; fix the column (or rebuild the recipe).",
                field=name,
            )
    return table


def _payloads(table: pa.Table, keep: dict[str, str]) -> Iterator[tuple[Any, ...]]:
    """The build's unit payloads for ``table``: its rows, no targets, the kept columns."""
    unit = _Unit(clip_target=False, keep=tuple(keep.items()))
    for s, e in unit_ranges(table.num_rows, TABLE_UNIT_ROWS):
        yield (table.take(np.arange(s, e)), None, unit)


def _kept(table: pa.Table, keep: Sequence[str] | None, extra: Any, source: str) -> dict[str, str]:
    """The columns to store unchanged (``keep``, or the build's --keep columns when None)."""
    if keep is None:
        built = extra.get("keep_columns", []) if isinstance(extra, dict) else []
        keep = [c for c in built if isinstance(c, str)]
        absent = [c for c in keep if c not in table.column_names]
        if absent:
            raise InputDataError(
                f"{source!r} has no column {absent[0]!r}, which the build kept (--keep) beside "
                "its features; add it, or pass keep=[] (--no-keep) to write the features only.",
                field=absent[0],
            )
    return keep_columns(table, keep, None, ())


def apply(
    recipe_path: str | os.PathLike[str],
    inputs: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    engine: str | Engine | None = None,
    on_progress: Progress | None = None,
    shard_bytes: int = 64 << 20,
    keep: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Turn new rows into one shard set with a saved table recipe, changing nothing in it.

    ``inputs`` is a CSV or Parquet file, or a directory of parts, holding at least
    the columns the recipe was fitted on, each of the same kind (number, text,
    timestamp); other columns (the target, ids) are ignored. Writes ``out`` (a shard
    set with field ``x``, float32, and ``cat``, int64, when the build wrote codes),
    with the build's column names and cardinalities in the manifest metadata. Rows
    the recipe drops (too many missing values) are counted in ``skipped``.

    ``keep``: columns stored unchanged as fields of their own (e.g. ``id``, to map
    scores back to rows), as ``build.table(keep=...)`` does. None (the default) keeps
    the columns the build kept, which the new data must then have; ``[]`` keeps none.

    Raises
    ------
    InputDataError
        A fitted column is missing or has another kind, or the recipe is not a table
        build's.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from importlib.resources import files
    >>> from datafuel import build
    >>> csv = str(files("datafuel") / "data" / "houses.csv")
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = build.table(csv, tmp / "built", target="price", drop=["id"])
    >>> s = build.apply(tmp / "built" / "recipe.json", csv, tmp / "scored")
    >>> s["kind"], s["counts"]["data"] + s["skipped"]
    ('apply', 2000)
    """
    timer = Timer()
    path, source, out = Path(recipe_path), str(inputs), Path(out)
    recipe, numeric, categories, steps, target = _load(path)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    wanted = {c: "numeric" for c in numeric} | {c: "text" for c in categories}
    if steps is not None:
        wanted |= {c: "text" for c in steps.codes} | {c: "date" for c in steps.dates}
    table = _check_columns(read_table(source), wanted, source)
    kept = _kept(table, keep, recipe_extra(path), source)
    timer.lap("read")
    onehot = [f"{c}={v}" for c, vs in categories.items() for v in vs]
    columns = [*numeric, *onehot] if steps is None else steps.columns(numeric, onehot)
    fields: dict[str, Field] = {"x": fixed("float32", (len(columns),))}
    shared: tuple[Any, ...] = (recipe, numeric, categories, False)
    metadata: dict[str, Any] = {"columns": columns, "target": target}
    if steps is not None:
        fields |= steps.fields()
        shared += (steps,)
        metadata |= steps.metadata()
    fields |= keep_field_specs(table, kept)  # after the column steps' fields, as in a build
    with locked(out, "build"), engine_for(engine) as runner:
        manifest = runner.write_units(
            out,
            fields,
            table_unit,
            _payloads(table, kept),
            shared=shared,
            shard_bytes=shard_bytes,
            provenance={"source": source, "recipe_fingerprint": fingerprint, "split": "apply"},
            metadata=metadata,
            on_rows=report(on_progress, "write", table.num_rows),
        )
        timer.lap("write")
    written = int(manifest["total_rows"])
    return make_summary(
        "apply",
        out,
        counts={"data": written},
        fitted={"recipe.json": fingerprint},
        skipped=table.num_rows - written,
        engine=runner,
        seconds=timer.seconds(),
        recipe=str(path),
        columns=columns,
        kept=list(kept),
    )
