"""``ShardWriter``: batches of named fields in, a verified shard set out."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from datafuel._checks import check_int
from datafuel._version import __version__
from datafuel.errors import ConfigError, DatafuelError, NonFiniteError, SchemaError, ShardError

from ._manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    atomic_write_bytes,
    dump_json,
    fsync_dir,
)
from ._schema import Field, bytes_field, check_field_name, fixed, ragged

__all__ = ["ShardWriter", "write_shards"]

_SHARD_FILE = re.compile(r"^shard-\d{5,}\.[A-Za-z0-9_-]+\.(bin|idx)$")


def _disk_error(exc: OSError, path: str | os.PathLike[str]) -> ShardError:
    """``exc`` (ENOSPC, EROFS, EACCES...) as a one-line ShardError naming ``path``.

    ``no space left on device: /data/out/shard-00003.jpeg.bin``; still an OSError
    with the original ``errno``, ``strerror`` and ``filename``.
    """
    reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return ShardError(
        f"{reason}: {path}",
        path=path,
        errno=exc.errno,
        strerror=exc.strerror,
        filename=os.fspath(path),
    )


@contextmanager
def _on_disk(path: str | os.PathLike[str]) -> Iterator[None]:
    """Translate an OSError of the body into a ShardError naming ``path``."""
    try:
        yield
    except DatafuelError:
        raise
    except OSError as exc:
        raise _disk_error(exc, getattr(exc, "filename", None) or path) from exc


class _HashedFile:
    """A file opened for writing that hashes and counts what goes through it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with _on_disk(path):
            # never write through a link (a symlinked copy of another build's shards, or a
            # planted link): remove whatever entry is there, then create a new file ("x":
            # O_EXCL, which also refuses a link put back in between)
            if os.path.lexists(path) and not path.is_dir():
                os.unlink(path)
            self.fh: IO[bytes] = open(path, "xb")  # noqa: SIM115 - closed in finish()/abort()
        self.hash = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes | memoryview | np.ndarray) -> None:
        if isinstance(data, np.ndarray):
            # a zero-size array (a field of shape (0, ...)) cannot be cast: it writes nothing
            mv = np.ascontiguousarray(data).data.cast("B") if data.size else memoryview(b"")
        else:
            mv = memoryview(data).cast("B")
        self.hash.update(mv)
        with _on_disk(self.path):
            self.fh.write(mv)
        self.nbytes += mv.nbytes

    def finish(self) -> dict[str, Any]:
        with _on_disk(self.path):
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
        return {"name": self.path.name, "bytes": self.nbytes, "sha256": self.hash.hexdigest()}

    def abort(self) -> None:
        """Close and remove the partial file; never raises (it runs while an error propagates)."""
        # the data is being thrown away: a failed flush of it changes nothing, and in a
        # read-only directory there is no file to remove
        with suppress(OSError):
            self.fh.close()  # closes the descriptor even when flushing the buffer fails
        with suppress(OSError):
            self.path.unlink(missing_ok=True)


class ShardWriter:
    """Write batches of named fields into a shard set; the manifest appears only on success.

    Parameters
    ----------
    directory
        Output directory (created). An existing shard set there is replaced: its
        manifest is removed *before* any data file is touched, so an interrupted
        rewrite never leaves a manifest that claims data it does not have.
    fields
        ``{name: Field}`` declared up front (see :func:`fixed`, :func:`ragged`,
        :func:`bytes_field`); every batch must match it exactly.
    shard_bytes
        A shard is closed once its data reaches this many bytes. Where the cut falls
        depends only on the rows, not on how they were batched, so the same rows
        always give the same bytes.
    provenance, metadata
        JSON-serialisable dicts stored in the manifest (source, split, fingerprints;
        e.g. class names). Never put secrets here.
    check_finite
        Refuse NaN and inf in float fields (default ``True``).
    on_shard
        Called with each shard's manifest entry (``{"rows", "files"}``, every file's
        name, bytes and sha256) as soon as that shard's files are complete and synced
        on disk, before the next shard opens: what a build into a bucket uploads while
        the writer goes on. An exception it raises stops the writer (as a failed write
        would: abort, no manifest).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import ShardWriter, ShardSet, fixed
    >>> d = tempfile.mkdtemp()
    >>> with ShardWriter(d, {"x": fixed("float32", (3,)), "y": fixed("int64")}) as w:
    ...     w.write({"x": np.ones((4, 3), np.float32), "y": np.arange(4)})
    >>> len(ShardSet(d))
    4
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        *,
        shard_bytes: int = 256 << 20,
        provenance: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        check_finite: bool = True,
        on_shard: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not fields:
            raise SchemaError("ShardWriter needs at least one field.")
        for name, spec in fields.items():
            check_field_name(name)
            if not isinstance(spec, Field):
                raise SchemaError(
                    f"field {name!r} must be a datafuel.loaders.Field. Got {type(spec).__name__}.",
                    field=name,
                )
        check_int("shard_bytes", shard_bytes)
        self.directory = Path(directory)
        self.fields = dict(fields)
        self.shard_bytes = shard_bytes
        self.provenance = {"datafuel_version": __version__, **dict(provenance or {})}
        self.metadata = dict(metadata or {})
        self.check_finite = check_finite
        self.on_shard = on_shard
        dump_json(self.provenance)  # fail now, not at close, on non-JSON provenance
        dump_json(self.metadata)
        self._shards: list[dict[str, Any]] = []
        self._files: dict[str, dict[str, _HashedFile]] = {}
        self._offsets: dict[str, int] = {}
        self._rows = 0  # rows in the open shard
        self._size = 0  # data bytes in the open shard
        self._total = 0
        self._closed = False
        self._started = False
        self.manifest: dict[str, Any] | None = None

    # -- context manager ------------------------------------------------------
    def __enter__(self) -> ShardWriter:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writing ----------------------------------------------------------------
    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        manifest = self.directory / MANIFEST_NAME
        with _on_disk(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
        with _on_disk(manifest):
            if manifest.exists():
                manifest.unlink()
                fsync_dir(self.directory)

    def write(self, batch: Mapping[str, Any]) -> None:
        """Append a batch: ``{field: values}`` with the same number of rows in each field."""
        if self._closed:
            raise ConfigError("this ShardWriter is closed; open a new one to write more.")
        self._start()
        missing = set(self.fields) - set(batch)
        extra = set(batch) - set(self.fields)
        if missing or extra:
            raise SchemaError(
                f"batch fields must be exactly {sorted(self.fields)}. "
                f"Missing {sorted(missing)}, unexpected {sorted(extra)}.",
                field=sorted(missing | extra)[0],
            )
        cols: dict[str, Any] = {}
        row_bytes = None
        n = None
        for name, spec in self.fields.items():
            col, sizes = self._validate(name, spec, batch[name])
            if n is None:
                n = len(sizes) if sizes is not None else len(col)
            m = len(sizes) if sizes is not None else len(col)
            if m != n:
                raise SchemaError(f"field {name!r} has {m} rows but the batch has {n}.", field=name)
            cols[name] = col
            per_row = (
                np.full(m, spec.row_bytes, np.int64)
                if spec.kind == "fixed"
                else sizes.astype(np.int64) * spec.itemsize + 8  # type: ignore[union-attr]
            )
            row_bytes = per_row if row_bytes is None else row_bytes + per_row
        if not n:
            return
        assert row_bytes is not None
        start = 0
        while start < n:
            # close the shard once its size reaches shard_bytes: the cut depends on rows only
            cum = np.cumsum(row_bytes[start:]) + self._size
            over = np.flatnonzero(cum >= self.shard_bytes)
            stop = start + int(over[0]) + 1 if over.size else n
            self._append(cols, start, stop)
            self._size = int(cum[stop - start - 1])
            if over.size:
                self._close_shard()
            start = stop

    def _validate(self, name: str, spec: Field, values: Any) -> tuple[Any, np.ndarray | None]:
        """One field's batch in the form written: an array, or row arrays and their sizes."""
        if spec.kind == "fixed":
            return self._validate_fixed(name, spec, values), None
        if isinstance(values, (str, bytes, np.ndarray)) or not isinstance(values, Sequence):
            raise SchemaError(
                f"field {name!r} is variable-length: pass a list with one "
                f"{'bytes object' if spec.kind == 'bytes' else '1-D array'} per row. Got {type(values).__name__}.",
                field=name,
            )
        items = [self._validate_item(name, spec, i, v) for i, v in enumerate(values)]
        sizes = np.fromiter((len(a) for a in items), np.int64, count=len(items))
        return items, sizes

    def _validate_fixed(self, name: str, spec: Field, values: Any) -> np.ndarray:
        """A fixed field's rows as one contiguous array of the declared dtype and shape."""
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        if arr.dtype != np.dtype(spec.dtype):
            raise SchemaError(
                f"field {name!r} is declared {spec.dtype}; got an array of {arr.dtype}. "
                f"Convert it first (values.astype({spec.dtype!r})) if that is what you mean.",
                field=name,
            )
        if arr.ndim == 0 or tuple(arr.shape[1:]) != spec.shape:
            raise SchemaError(
                f"field {name!r} rows must have shape {spec.shape}; got an array of shape {arr.shape}.",
                field=name,
            )
        if self.check_finite and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
            raise NonFiniteError(
                f"field {name!r} has NaN or inf in {bad.size} row(s) of this batch "
                f"(batch rows {bad[:10].tolist()}, i.e. shard-set rows "
                f"{(bad[:10] + self._total).tolist()}); no NaN or inf may reach a shard.",
                field=name,
                row=int(bad[0] + self._total),
                indices=(bad + self._total).tolist(),
            )
        return np.ascontiguousarray(arr, dtype=spec.np_dtype)

    def _validate_item(self, name: str, spec: Field, i: int, v: Any) -> np.ndarray:
        """Row ``i`` of a bytes or ragged field as a 1-D array of the declared dtype."""
        if spec.kind == "bytes":
            if not isinstance(v, (bytes, bytearray, memoryview)):
                raise SchemaError(
                    f"field {name!r} row {i}: expected bytes, got {type(v).__name__}.",
                    field=name,
                    row=i,
                )
            return np.frombuffer(v, np.uint8)
        a = v if isinstance(v, np.ndarray) else np.asarray(v)
        if a.dtype != np.dtype(spec.dtype) or a.ndim != 1:
            raise SchemaError(
                f"field {name!r} row {i}: expected a 1-D {spec.dtype} array, got {a.ndim}-D {a.dtype}.",
                field=name,
                row=i,
            )
        if self.check_finite and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise NonFiniteError(
                f"field {name!r} row {i} has NaN or inf.", field=name, row=self._total + i
            )
        return a.astype(spec.np_dtype, copy=False)

    def _open_shard(self) -> None:
        k = len(self._shards)
        self._files = {}
        for name, spec in self.fields.items():
            # registered as each opens, so that abort() removes every one already created
            parts = self._files[name] = {}
            parts["bin"] = _HashedFile(self.directory / f"shard-{k:05d}.{name}.bin")
            if spec.kind != "fixed":
                parts["idx"] = _HashedFile(self.directory / f"shard-{k:05d}.{name}.idx")
                parts["idx"].write(np.zeros(1, "<u8"))
                self._offsets[name] = 0
        self._rows = 0
        self._size = 0

    def _append(self, cols: Mapping[str, Any], start: int, stop: int) -> None:
        if not self._files:
            self._open_shard()
        for name, spec in self.fields.items():
            col = cols[name]
            files = self._files[name]
            if spec.kind == "fixed":
                files["bin"].write(col[start:stop])
                continue
            chunk = col[start:stop]
            data = np.concatenate(chunk) if chunk else np.zeros(0, spec.np_dtype)
            files["bin"].write(np.ascontiguousarray(data, dtype=spec.np_dtype))
            lengths = np.fromiter((len(a) for a in chunk), np.uint64, count=len(chunk))
            offs = np.cumsum(lengths, dtype=np.uint64) + np.uint64(self._offsets[name])
            files["idx"].write(offs.astype("<u8"))
            if len(offs):
                self._offsets[name] = int(offs[-1])
        self._rows += stop - start
        self._total += stop - start

    def _close_shard(self) -> None:
        if not self._files:
            return
        entry = {
            "rows": self._rows,
            "files": {
                name: {part: f.finish() for part, f in parts.items()}
                for name, parts in self._files.items()
            },
        }
        self._shards.append(entry)
        self._files = {}
        self._rows = 0
        self._size = 0
        if self.on_shard is not None:
            self.on_shard(entry)

    # -- finishing ----------------------------------------------------------------
    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the manifest (last, atomically). Returns it."""
        if self._closed:
            assert self.manifest is not None
            return self.manifest
        self._start()
        self._close_shard()
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "fields": {name: spec.to_json() for name, spec in self.fields.items()},
            "shards": self._shards,
            "total_rows": self._total,
            "total_bytes": sum(
                f["bytes"]
                for s in self._shards
                for parts in s["files"].values()
                for f in parts.values()
            ),
            "provenance": self.provenance,
            "metadata": self.metadata,
        }
        keep = {
            f["name"] for s in self._shards for parts in s["files"].values() for f in parts.values()
        }
        with _on_disk(self.directory):
            for stale in self.directory.iterdir():  # files of an earlier, larger build
                if _SHARD_FILE.match(stale.name) and stale.name not in keep:
                    stale.unlink()
            fsync_dir(self.directory)
        with _on_disk(self.directory / MANIFEST_NAME):  # its temp file is removed on failure
            atomic_write_bytes(self.directory / MANIFEST_NAME, dump_json(manifest))
        self._closed = True
        self.manifest = manifest
        return manifest

    def abort(self) -> None:
        """Stop without a manifest: the directory is not a readable shard set.

        The files of the open (partial) shard are closed and removed; shards already
        finished stay until a rerun overwrites them. Never raises, so it is safe while
        another error (a full disk) propagates.
        """
        for parts in self._files.values():
            for f in parts.values():
                f.abort()
        self._files = {}
        self._closed = True


def infer_fields(arrays: Mapping[str, Any]) -> dict[str, Field]:
    """Field declarations from example values: arrays → fixed, lists of bytes → bytes, lists of arrays → ragged."""
    out: dict[str, Field] = {}
    for name, values in arrays.items():
        if isinstance(values, np.ndarray):
            out[name] = fixed(values.dtype, tuple(values.shape[1:]))
        elif (
            isinstance(values, Sequence)
            and values
            and isinstance(values[0], (bytes, bytearray, memoryview))
        ):
            out[name] = bytes_field()
        elif isinstance(values, Sequence) and values:
            out[name] = ragged(np.asarray(values[0]).dtype)
        else:
            raise SchemaError(
                f"cannot infer the kind of field {name!r} from {type(values).__name__}; declare it.",
                field=name,
            )
    return out


def write_shards(
    directory: str | os.PathLike[str],
    *,
    fields: Mapping[str, Field] | None = None,
    shard_bytes: int = 256 << 20,
    provenance: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **arrays: Any,
) -> dict[str, Any]:
    """Write whole arrays as one shard set in a single call; returns the manifest.

    >>> import numpy as np, tempfile
    >>> m = write_shards(tempfile.mkdtemp(), x=np.zeros((8, 2), np.float32), y=np.arange(8))
    >>> m["total_rows"]
    8
    """
    spec = dict(fields) if fields is not None else infer_fields(arrays)
    with ShardWriter(
        directory, spec, shard_bytes=shard_bytes, provenance=provenance, metadata=metadata
    ) as w:
        w.write(arrays)
    assert w.manifest is not None
    return w.manifest
