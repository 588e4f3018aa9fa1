"""Documents from columnar files: Parquet, Arrow IPC / Feather, and HF ``save_to_disk`` dirs.

Each row is one document, its text in one string column (``text_field``). Files are
read one record batch at a time (Parquet: only the text column, ``batch_rows`` rows at
a time; Arrow: memory-mapped, one batch at a time), so a file of any size streams.

Policy (the same as for ``.jsonl`` lines):

* A missing column, or a column that is not a string type (``string``,
  ``large_string``, ``string_view``, or a dictionary of strings), is refused with a
  :class:`~datafuel.errors.SchemaError` naming the file, the field and row 0 (every
  row has the problem).
* A null value is refused with an :class:`~datafuel.errors.InputDataError` naming
  the file, the field and the row (0-based within the file): a ``.jsonl`` ``null``
  is refused too, and a silently dropped row would go unnoticed. Filter nulls first
  (``pyarrow.compute.drop_null``, ``Dataset.filter``) to skip them on purpose.
* String values that are not valid UTF-8 (Parquet does not check) become U+FFFD,
  counted as for ``.txt`` files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from datafuel.errors import ConfigError, InputDataError, SchemaError

from ._utf8 import decode_utf8

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ARROW_SUFFIXES",
    "PARQUET_SUFFIXES",
    "arrow_batches",
    "check_schema",
    "hf_dataset_batches",
    "hf_dataset_files",
    "is_hf_dataset",
    "parquet_batches",
    "table_texts",
]


class _Counts(Protocol):  # the CorpusStats counters a table reader adds to
    bytes: int
    replaced: int


PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow", ".feather")
_BATCH_ROWS = 1024
_HF_EXTRA = "pip install 'datafuel[hf]'"


def is_hf_dataset(d: Path) -> bool:
    """Whether ``d`` is a directory written by ``datasets.Dataset.save_to_disk``."""
    return (d / "state.json").is_file() and (d / "dataset_info.json").is_file()


def hf_dataset_files(d: Path) -> list[Path]:
    """The files of a ``save_to_disk`` directory (for change detection), sorted."""
    return sorted(p for p in d.iterdir() if p.is_file())


def _is_text_type(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
    )


def check_schema(schema: pa.Schema, f: Path, field: str) -> None:
    """Refuse a schema without ``field`` or whose ``field`` is not a string column."""
    import pyarrow as pa

    if field not in schema.names:
        raise SchemaError(
            f"{f}: row 0 (0-based): no {field!r} column (columns: {schema.names[:10]}); "
            "pick another with --text-field.",
            path=f,
            row=0,
            field=field,
        )
    t = schema.field(field).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (_is_text_type(t) or pa.types.is_null(t)):
        raise SchemaError(
            f"{f}: row 0 (0-based): field {field!r} must be a string, got {schema.field(field).type} "
            "(the type of the whole column).",
            path=f,
            row=0,
            field=field,
        )


def table_texts(
    column: pa.Array | pa.ChunkedArray, f: Path, field: str, first_row: int, stats: _Counts
) -> list[str]:
    """The values of one batch of the text column as ``str`` (nulls refused, bytes counted)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if arr.null_count:
        i = pc.index(pc.is_null(arr), True).as_py()
        raise InputDataError(
            f"{f}: row {first_row + i} (0-based): field {field!r} is null; a document must be a string "
            "(drop null rows first to skip them).",
            path=f,
            row=first_row + i,
            field=field,
        )
    stats.bytes += int(pc.sum(pc.binary_length(arr)).as_py() or 0)
    try:
        return list(arr.to_pylist())
    except UnicodeDecodeError:  # Parquet does not check that strings are UTF-8
        texts = []
        for raw in arr.cast(pa.large_binary()).to_pylist():
            text, n = decode_utf8(raw)
            stats.replaced += n
            texts.append(text)
        return texts


def _reading_error(f: Path, what: str, exc: Exception) -> InputDataError:
    why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return InputDataError(f"{f}: cannot read as {what} ({why}).", path=f)


def _guarded(batches: Iterator[Any], f: Path, what: str) -> Iterator[Any]:
    """``batches`` with a reading error (a truncated or corrupt file) translated, naming ``f``."""
    import pyarrow as pa

    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise _reading_error(f, what, exc) from exc
        if batch is None:
            return
        yield batch


def parquet_batches(f: Path, field: str) -> Iterator[pa.Array | pa.ChunkedArray]:
    """The text column of a Parquet file, ``_BATCH_ROWS`` rows at a time (no other column read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as exc:
        raise _reading_error(f, "Parquet", exc) from exc
    with pf:
        check_schema(pf.schema_arrow, f, field)
        batches = pf.iter_batches(batch_size=_BATCH_ROWS, columns=[field])
        for batch in _guarded(batches, f, "Parquet"):
            yield batch.column(0)


def _open_ipc(source: Any, f: Path) -> tuple[Any, Iterator[Any]]:
    """An IPC file (Feather v2) or, failing that, an IPC stream: its schema and batches."""
    import pyarrow as pa

    try:
        reader: Any = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        source.seek(0)
    try:  # datasets' save_to_disk writes the stream format
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError) as exc:
        raise _reading_error(
            f, "an Arrow IPC file or stream (Feather v1 files are not read)", exc
        ) from exc
    return reader.schema, iter(reader)


def arrow_batches(f: Path, field: str) -> Iterator[pa.Array | pa.ChunkedArray]:
    """The text column of an Arrow IPC file or stream, memory-mapped, batch by batch."""
    import pyarrow as pa

    try:
        source = pa.memory_map(str(f), "r")
    except (pa.ArrowException, OSError) as exc:
        raise _reading_error(f, "Arrow IPC", exc) from exc
    with source:
        schema, batches = _open_ipc(source, f)
        check_schema(schema, f, field)
        col = schema.get_field_index(field)
        for batch in _guarded(batches, f, "Arrow IPC"):
            for start in range(0, batch.num_rows, _BATCH_ROWS):
                yield batch.column(col).slice(start, _BATCH_ROWS)


def _import_datasets(d: Path) -> Any:
    if "datasets" not in sys.modules:  # local files only: datasets never reaches the Hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            f"{d} is a Hugging Face dataset saved with save_to_disk; reading it needs the "
            f"'hf' extra ({_HF_EXTRA}). Without it, give its data-*.arrow files instead.",
            path=d,
        ) from exc
    return datasets


def hf_dataset_batches(d: Path, field: str) -> Iterator[pa.Array | pa.ChunkedArray]:
    """The text column of a ``save_to_disk`` dataset, loaded from local files by ``datasets``."""
    import pyarrow as pa

    datasets = _import_datasets(d)
    try:
        ds = datasets.load_from_disk(str(d), keep_in_memory=False)
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise _reading_error(d, "a Hugging Face dataset (load_from_disk)", exc) from exc
    if not isinstance(ds, datasets.Dataset):
        raise ConfigError(
            f"{d}: a {type(ds).__name__}; give one of its splits' directories "
            f"({', '.join(str(d / s) for s in ds)}).",
            path=d,
        )
    check_schema(ds.data.schema, d, field)
    for table in ds.select_columns([field]).with_format("arrow").iter(batch_size=_BATCH_ROWS):
        yield table.column(0)
