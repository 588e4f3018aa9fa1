"""The Parquet sink: one part per page, written durably, and the reader of the result.

An ingest output directory holds ``part-00000000.parquet``, ``part-00000001.parquet``,
... (the number is the 0-based page index, so sorting by name gives page order; a page
that contributed no new rows has no part) plus bookkeeping files that start with ``_``
(``_state.json``, ``_drift.jsonl``, ``_common_metadata``) which Parquet dataset
readers ignore. Each part is
written with the unified schema *as of its page*; the final unified schema is in
``_state.json`` and :func:`read_ingested` casts every part to it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from datafuel.errors import IngestError, SchemaError

from ._checkpoint import STATE_FILE, fsync_dir
from ._schema import ARROW_TYPES, cast_column

__all__ = ["COMMON_METADATA", "ParquetSink", "part_index", "part_name", "read_ingested"]

#: the unified schema of every part (Parquet footer, no row groups): what pyarrow, Dask,
#: Spark and DuckDB users pass as the dataset's schema so later columns are not dropped
COMMON_METADATA = "_common_metadata"

_PART_RE = re.compile(r"^part-(\d{8,})\.parquet$")


def part_name(page: int) -> str:
    """File name of the part holding page ``page`` (0-based)."""
    return f"part-{page:08d}.parquet"


def part_index(path: Path) -> int:
    """The page number in a part's name (``part-00000007.parquet`` -> 7)."""
    m = _PART_RE.match(path.name)
    if m is None:
        raise ValueError(f"{path.name} is not a part name")
    return int(m.group(1))


class ParquetSink:
    """Writes parts atomically: temp file, fsync, rename, directory fsync."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync

    def parts(self) -> list[Path]:
        """Existing parts in page order."""
        found = [p for p in self.directory.iterdir() if _PART_RE.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def write_part(
        self, page: int, table: pa.Table, metadata: Mapping[str, str] | None = None
    ) -> Path:
        """Write ``table`` as the part of ``page``; it appears under its name only when complete."""
        if metadata:
            meta = dict(table.schema.metadata or {})
            meta.update({k.encode(): v.encode() for k, v in metadata.items()})
            table = table.replace_schema_metadata(meta)
        return self._replace(part_name(page), lambda f: pq.write_table(table, f))

    def write_common_metadata(self, schema: pa.Schema) -> Path:
        """Replace ``_common_metadata`` with ``schema`` atomically (temp, fsync, rename)."""
        return self._replace(COMMON_METADATA, lambda f: pq.write_metadata(schema, f))

    def _replace(self, name: str, write: Callable[[Any], None]) -> Path:
        """``name`` in the directory, written by ``write(file)`` to a temporary file, fsynced
        (when asked) and renamed into place: readers see the old file or the whole new one."""
        final = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.fsync:
            fsync_dir(self.directory)
        return final

    def row_count(self, parts: Sequence[Path]) -> int:
        """Rows in ``parts``, from their footers (the data is not read)."""
        total = 0
        for part in parts:
            try:
                total += pq.read_metadata(part).num_rows
            except (pa.ArrowException, OSError) as exc:
                raise IngestError(f"cannot read committed part {part}: {exc}", path=part) from exc
        return total

    def discard_uncommitted(self, pages: int) -> list[str]:
        """Remove temp files and parts of pages >= ``pages`` (written after the last state).

        Temp files are those of a part or of the checkpoint's atomic replace
        (``._state.json.<random>.tmp``) that a kill interrupted.
        """
        removed = []
        for p in self.directory.iterdir():
            m = _PART_RE.match(p.name)
            if (m and int(m.group(1)) >= pages) or (
                p.name.startswith((".part-", "._state.json.", f".{COMMON_METADATA}"))
                and p.name.endswith(".tmp")
            ):
                p.unlink()
                removed.append(p.name)
        return sorted(removed)


def read_ingested(
    directory: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    drop: Sequence[str] = (),
) -> pa.Table:
    """Read an ingest output directory as one table with the final unified schema.

    Parts written before a schema change are cast to the final types (``int`` ->
    ``float``, anything -> ``string`` as JSON text) and get nulls for columns that did
    not exist yet. Works on any directory of ``*.parquet`` files too: without
    ``_state.json`` the schemas are unified by Arrow's permissive promotion. The
    ``drop`` columns are removed from every part *before* the parts are unified, so a
    column whose types cannot be unified can be left out.

    Examples
    --------
    >>> table = read_ingested("out/listings")  # doctest: +SKIP
    >>> table.num_rows  # doctest: +SKIP
    300
    """
    root = Path(directory)
    if not root.is_dir():
        raise IngestError(f"{root} is not a directory of ingested Parquet parts", path=root)
    files = sorted(
        p for p in root.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_"))
    )
    types = _state_types(root / STATE_FILE)
    if types is not None:
        types = {k: v for k, v in types.items() if k not in drop}
    tables = [_without(_read_part(path), drop) for path in files]
    final = _final_schema(root, types, tables)
    out = [_conform(path, table, final, types) for path, table in zip(files, tables, strict=True)]
    result = pa.concat_tables(out) if out else final.empty_table()
    if columns is None:
        return result
    missing = [c for c in columns if c not in result.column_names]
    if missing:
        raise SchemaError(
            f"columns {missing} are not in {root}; it has {result.column_names}", path=root
        )
    return result.select(list(columns))


def _state_types(state_path: Path) -> dict[str, str] | None:
    """The final unified column types in ``_state.json``; ``None`` without one."""
    if not state_path.exists():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in state["schema"]["columns"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IngestError(f"{state_path} has no readable schema: {exc}", path=state_path) from exc


def _without(table: pa.Table, drop: Sequence[str]) -> pa.Table:
    """``table`` without those of the ``drop`` columns it has."""
    return table.drop_columns([c for c in drop if c in table.column_names])


def _read_part(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"cannot read Parquet part {path}: {exc}", path=path) from exc


def _final_schema(root: Path, types: dict[str, str] | None, tables: list[pa.Table]) -> pa.Schema:
    """The checkpoint's schema, or (without one) the parts' schemas promoted permissively."""
    if types is not None:
        final = pa.schema([(k, ARROW_TYPES[v]) for k, v in types.items()])
    elif not tables:
        raise IngestError(f"{root} holds no Parquet files", path=root)
    else:
        try:
            final = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
        except pa.ArrowException as exc:
            raise SchemaError(
                f"the Parquet files in {root} have incompatible schemas: {exc}", path=root
            ) from exc
    return final.remove_metadata()


def _conform(
    path: Path, table: pa.Table, final: pa.Schema, types: dict[str, str] | None
) -> pa.Table:
    """``table`` cast to ``final``, with nulls for the columns it did not have yet."""
    arrays = []
    for f in final:
        if f.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, type=f.type))
        elif types is not None:
            arrays.append(cast_column(table.column(f.name), types[f.name]))
        else:
            arrays.append(table.column(f.name).cast(f.type))
    try:
        return pa.Table.from_arrays(arrays, schema=final)
    except pa.ArrowException as exc:
        raise SchemaError(
            f"cannot cast part {path} to the unified schema: {exc}", path=path
        ) from exc
