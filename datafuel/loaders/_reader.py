"""``ShardSet``: memory-mapped, O(1) random access to a shard set."""

from __future__ import annotations

import errno
import math
import mmap
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._checks import check_int
from datafuel.errors import CorruptShardError, SchemaError

from ._manifest import load_manifest, sha256_fd
from ._schema import Field
from ._tokens import TokenStream

try:  # the one-pass native gather (optional C extension, see _gather.c)
    from . import _gather
except ImportError:  # pragma: no cover - exercised by the fallback test's monkeypatch
    _gather = None  # type: ignore[assignment]

__all__ = ["ShardSet"]


def _map(fd: int, dtype: np.dtype[Any], nbytes: int) -> np.ndarray:
    """The first ``nbytes`` of the file open at ``fd`` as a read-only array of ``dtype``."""
    if nbytes == 0:
        return np.zeros(0, dtype)
    # a plain ndarray over the map (kept alive by .base): no np.memmap subclass overhead per gather
    return np.frombuffer(mmap.mmap(fd, nbytes, access=mmap.ACCESS_READ), dtype=dtype)


class ShardSet:
    """Read a shard set written by :class:`ShardWriter`.

    Every file is memory-mapped on first use; nothing per sample is held in Python
    objects, so forked or threaded workers do not grow memory as they read.
    Opening checks the manifest (format, version, plain file names) and every
    file's size; ``verify=True`` (or :meth:`verify`) also checks every sha256.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import ShardSet, write_shards
    >>> d = tempfile.mkdtemp()
    >>> _ = write_shards(d, x=np.arange(10, dtype=np.float32).reshape(5, 2), y=np.arange(5))
    >>> ds = ShardSet(d)
    >>> ds.gather([4, 0])["y"].tolist()
    [4, 0]
    """

    def __init__(self, directory: str | os.PathLike[str], *, verify: bool = False) -> None:
        self.directory = Path(directory)
        self._setup(*load_manifest(self.directory))
        self._root = os.path.realpath(self.directory)
        self._check_sizes()
        if verify:
            self.verify()

    def _setup(self, manifest: dict[str, Any], fields: dict[str, Field]) -> None:
        """The state every shard set keeps from its (validated) manifest."""
        self.manifest, self.fields = manifest, fields
        self.shards: list[dict[str, Any]] = self.manifest["shards"]
        rows = np.array([s["rows"] for s in self.shards], dtype=np.int64)
        #: global index of each shard's first row, plus the total at the end
        self.offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._maps: dict[tuple[int, str], tuple[np.ndarray, np.ndarray | None]] = {}
        #: per fixed field, the native gather's shard list (b"" until a shard is first read)
        #: and which shards it holds: built as gathers touch shards, never all at once
        self._srcs: dict[str, tuple[list[Any], np.ndarray]] = {}

    # -- metadata ----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.manifest.get("metadata", {}))

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.manifest.get("provenance", {}))

    @property
    def nbytes(self) -> int:
        return int(self.manifest.get("total_bytes", 0))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{n}:{f.kind}[{f.dtype}{list(f.shape) if f.shape else ''}]"
            for n, f in self.fields.items()
        )
        return f"ShardSet({str(self.directory)!r}, rows={len(self)}, shards={self.num_shards}, fields=({fields}))"

    # -- integrity ---------------------------------------------------------------
    def _open(self, entry: dict[str, Any], field: str) -> int:
        """A descriptor of the regular file ``entry`` names, inside the directory, of its size.

        Opened without following a symbolic link (``O_NOFOLLOW``; ``O_NONBLOCK`` so a FIFO
        cannot hang the open), then checked with ``fstat``: what is read is what was
        checked. Anything else raises CorruptShardError naming the file.
        """
        path = self.directory / entry["name"]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise CorruptShardError(
                f"{path}: listed in the manifest but missing.", path=path, field=field
            ) from exc
        except OSError as exc:
            why = (
                "is a symbolic link; shard files must be regular files inside the shard set"
                if exc.errno == errno.ELOOP
                else f"cannot be opened ({(exc.strerror or str(exc)).lower()})"
            )
            raise CorruptShardError(f"{path}: {why}.", path=path, field=field) from exc
        try:
            self._check_open_file(fd, path, entry, field)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_open_file(self, fd: int, path: Path, entry: dict[str, Any], field: str) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptShardError(
                f"{path}: not a regular file; refusing to read it.", path=path, field=field
            )
        if os.path.realpath(path) != os.path.join(self._root, entry["name"]):
            raise CorruptShardError(
                f"{path}: resolves outside the shard set {self._root}; refusing to read it.",
                path=path,
                field=field,
            )
        if st.st_size != entry["bytes"]:
            raise CorruptShardError(
                f"{path}: size is {st.st_size} bytes but the manifest says {entry['bytes']} "
                "(truncated or modified after it was written).",
                path=path,
                field=field,
            )

    def _check_sizes(self) -> None:
        """Every listed file is a regular file inside the directory, of its listed size.

        (That the sizes fit the rows and the field layouts, exactly, is checked with
        the manifest.)
        """
        for k, shard in enumerate(self.shards):
            for fname, parts in shard["files"].items():
                for entry in parts.values():
                    os.close(self._open(entry, fname))
            for fname, spec in self.fields.items():
                if spec.kind != "fixed" and shard["rows"]:
                    self._check_offsets(k, shard, fname, spec)

    def _check_offsets(self, k: int, shard: dict[str, Any], fname: str, spec: Field) -> None:
        """A variable-length field's offsets run 0..len(bin) and never go down."""
        _, idx = self._mmap(k, fname)
        assert idx is not None
        end = int(idx[-1]) * spec.itemsize
        if (
            int(idx[0]) != 0
            or end != shard["files"][fname]["bin"]["bytes"]
            or np.any(np.diff(idx.astype(np.int64)) < 0)
        ):
            path = self.directory / shard["files"][fname]["idx"]["name"]
            raise CorruptShardError(
                f"{path}: offsets are not a non-decreasing 0..len(bin) sequence.",
                path=path,
                field=fname,
            )

    def verify(self) -> None:
        """Check every file's sha256 against the manifest; raise naming the first bad file."""
        for shard in self.shards:
            for fname, parts in shard["files"].items():
                for entry in parts.values():
                    fd = self._open(entry, fname)
                    try:
                        digest = sha256_fd(fd)
                    finally:
                        os.close(fd)
                    if digest != entry["sha256"]:
                        path = self.directory / entry["name"]
                        raise CorruptShardError(
                            f"{path}: checksum mismatch (sha256 {digest[:16]}..., manifest says "
                            f"{entry['sha256'][:16]}...).",
                            path=path,
                            field=fname,
                        )

    # -- access ------------------------------------------------------------------
    def _mmap(self, shard: int, field: str) -> tuple[np.ndarray, np.ndarray | None]:
        key = (shard, field)
        hit = self._maps.get(key)
        if hit is not None:
            return hit
        spec = self.fields[field]
        files = self.shards[shard]["files"][field]
        data = self._map_file(files["bin"], field, spec.np_dtype)
        idx = None
        if spec.kind == "fixed":
            data = data.reshape((self.shards[shard]["rows"], *spec.shape))
        else:
            idx = self._map_file(files["idx"], field, np.dtype("<u8"))
        self._maps[key] = (data, idx)
        return data, idx

    def _map_file(self, entry: dict[str, Any], field: str, dtype: np.dtype[Any]) -> np.ndarray:
        """The file ``entry`` names, checked again as it is opened, mapped read-only."""
        fd = self._open(entry, field)
        try:
            return _map(fd, dtype, entry["bytes"])
        finally:
            os.close(fd)

    def field_array(self, field: str, shard: int = 0) -> np.ndarray:
        """The memory-mapped data array of one field in one shard (read-only)."""
        self._check_field(field)
        return self._mmap(shard, field)[0]

    def _check_field(self, field: str) -> Field:
        try:
            return self.fields[field]
        except KeyError:
            raise SchemaError(
                f"no field {field!r} in {self.directory}; fields are {sorted(self.fields)}.",
                field=field,
            ) from None

    def _locate(self, indices: np.ndarray) -> np.ndarray:
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            bad = indices[(indices < -n) | (indices >= n)][0]
            raise IndexError(
                f"sample index {int(bad)} is out of range for {self.directory} with {n} rows."
            )
        if len(self.shards) == 1:
            return np.zeros(indices.shape, np.int64)
        return np.searchsorted(self.offsets, indices, side="right") - 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        out = self.gather(np.array([index], dtype=np.int64))
        return {k: v[0] for k, v in out.items()}

    def gather(
        self,
        indices: Sequence[int] | np.ndarray,
        fields: Sequence[str] | None = None,
        out: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """Rows ``indices`` of each field: one vectorised read per shard and field.

        Fastest when the indices are grouped by shard (sorted, say): each shard's rows
        are then read straight into their slice of the output. Fixed fields come back as arrays of shape ``(len(indices), *shape)`` (written
        into ``out[field]`` when given, e.g. a pinned buffer); ragged fields as a list
        of arrays; bytes fields as a list of ``bytes``.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        names = list(self.fields) if fields is None else list(fields)
        if _gather is not None and idx.size:
            fast = self._gather_rows(idx, names, out)
            if fast is not None:
                return fast
        if idx.size and idx.min() < 0:
            idx = np.where(idx < 0, idx + len(self), idx)
        shard_of = self._locate(idx)
        planned: tuple[list[tuple[int, slice, np.ndarray]], np.ndarray | None] | None = None
        result: dict[str, Any] = {}
        for name in names:
            spec = self._check_field(name)
            if spec.kind == "fixed":
                # natively where the out buffer is contiguous (one pass, no staging copy)
                got = (
                    self._gather_rows(idx, [name], out)
                    if _gather is not None and idx.size
                    else None
                )
                if got is not None:
                    result[name] = got[name]
                    continue
                if planned is None:
                    planned = self._plan_reads(idx, shard_of)
                dst = out.get(name) if out is not None else None
                result[name] = self._gather_fixed(name, spec, idx.size, *planned, dst)
            else:
                result[name] = self._gather_items(name, spec, idx, shard_of)
        return result

    def _plan_reads(
        self, idx: np.ndarray, shard_of: np.ndarray
    ) -> tuple[list[tuple[int, slice, np.ndarray]], np.ndarray | None]:
        """The reads of one gather, planned once for every field.

        ``(shard, output slice, local rows)`` per shard touched, and ``None``
        when the indices are grouped by shard (e.g. sorted): each shard's rows are
        then read straight into contiguous slices of the output. Otherwise each
        shard's rows are read together into a staging buffer, in shard order, and
        the returned inverse permutation takes them into place.
        """
        plan: list[tuple[int, slice, np.ndarray]] = []
        if not idx.size:
            return plan, None
        lo, hi = int(shard_of[0]), int(shard_of[-1])
        if lo == hi and (self.num_shards == 1 or shard_of.min() == shard_of.max()):
            return [(lo, slice(None), idx - self.offsets[lo])], None
        if bool(np.all(shard_of[1:] >= shard_of[:-1])):
            bounds = np.searchsorted(shard_of, np.arange(lo, hi + 2)).tolist()
            for k in range(lo, hi + 1):
                a, b = bounds[k - lo], bounds[k - lo + 1]
                if b > a:
                    plan.append((k, slice(a, b), idx[a:b] - self.offsets[k]))
            return plan, None
        perm = np.argsort(shard_of, kind="stable")
        by_shard = shard_of[perm]
        lo, hi = int(by_shard[0]), int(by_shard[-1])
        bounds = np.searchsorted(by_shard, np.arange(lo, hi + 2)).tolist()
        for k in range(lo, hi + 1):
            a, b = bounds[k - lo], bounds[k - lo + 1]
            if b > a:
                plan.append((k, slice(a, b), idx[perm[a:b]] - self.offsets[k]))
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(perm.size)
        return plan, inverse

    def _gather_rows(
        self, idx: np.ndarray, names: list[str], out: dict[str, np.ndarray] | None
    ) -> dict[str, Any] | None:
        """:meth:`gather` of fixed fields in one ``_gather.rows_at`` call per field.

        The index checks, the shard lookup and the copy are all in C: the Python path
        around a copy (range checks, ``searchsorted``, index arithmetic) cost ~11 us a
        batch, as much as copying 256 rows. None when a field is not fixed or
        an ``out`` buffer is strided: the general path takes those.
        """
        assert _gather is not None
        result: dict[str, Any] = {}
        if not idx.flags.c_contiguous:
            idx = np.ascontiguousarray(idx)
        for name in names:
            spec = self.fields.get(name)
            if spec is None or spec.kind != "fixed":
                return None
            dst = self._check_out(name, spec, idx.size, None if out is None else out.get(name))
            row_bytes = dst.itemsize * math.prod(spec.shape)
            if not dst.flags.c_contiguous:
                return None
            if row_bytes:
                self._rows_into(name, idx, row_bytes, dst)
            result[name] = dst
        return result

    def _rows_into(self, name: str, idx: np.ndarray, row_bytes: int, dst: np.ndarray) -> None:
        """One ``_gather.rows_at`` into ``dst``, mapping each shard it finds unmapped."""
        assert _gather is not None
        cached = self._srcs.get(name)
        if cached is None:
            cached = self._srcs[name] = ([b""] * self.num_shards, np.zeros(self.num_shards, bool))
        srcs, mapped = cached
        seen: set[int] = set()  # shards this call found mapped (or mapped itself)
        while (status := _gather.rows_at(srcs, self.offsets, idx, row_bytes, dst)) is not None:
            if isinstance(status, int):
                bad = int(idx[status])
                raise IndexError(
                    f"sample index {bad} is out of range for {self.directory} with "
                    f"{len(self)} rows."
                )
            k = int(status[0])  # a shard this field has not read yet: map it
            if k in seen:  # _mmap shapes a shard to its rows: not expected
                raise CorruptShardError(
                    f"{self.directory}: shard {k} of field {name!r} is shorter than its rows.",
                    field=name,
                )
            seen.add(k)
            # another worker may have mapped it since rows_at looked: then just call again
            if not mapped[k]:
                srcs[k] = self._mmap(k, name)[0]
                mapped[k] = True

    def _check_out(self, name: str, spec: Field, n: int, dst: np.ndarray | None) -> np.ndarray:
        """``dst`` checked (or a new array) for ``n`` rows of the fixed field ``name``."""
        if dst is None:
            return np.empty((n, *spec.shape), dtype=spec.np_dtype)
        if dst.shape != (n, *spec.shape) or dst.dtype != spec.np_dtype:
            raise SchemaError(
                f"out[{name!r}] must be {spec.dtype} of shape {(n, *spec.shape)}; got {dst.dtype} {dst.shape}.",
                field=name,
            )
        return dst

    def _gather_fixed(
        self,
        name: str,
        spec: Field,
        n: int,
        plan: list[tuple[int, slice, np.ndarray]],
        inverse: np.ndarray | None,
        dst: np.ndarray | None,
    ) -> np.ndarray:
        """A fixed field's ``n`` planned rows, into ``dst`` when given."""
        dst = self._check_out(name, spec, n, dst)
        stage = dst if inverse is None else np.empty_like(dst)
        for k, where, local in plan:
            src = self._mmap(k, name)[0]
            # indices are range-checked above; mode="clip" lets take write without a buffer
            np.take(src, local, axis=0, out=stage[where], mode="clip")
        if inverse is not None:
            np.take(stage, inverse, axis=0, out=dst, mode="clip")
        return dst

    def _gather_items(
        self, name: str, spec: Field, idx: np.ndarray, shard_of: np.ndarray
    ) -> list[Any]:
        """A ragged field's rows as arrays, a bytes field's as ``bytes``."""
        items: list[Any] = [None] * idx.size
        for j, (gi, k) in enumerate(zip(idx.tolist(), shard_of.tolist(), strict=True)):
            data, offs = self._mmap(k, name)
            assert offs is not None
            local = gi - int(self.offsets[k])
            a, b = int(offs[local]), int(offs[local + 1])
            items[j] = data[a:b].tobytes() if spec.kind == "bytes" else np.array(data[a:b])
        return items

    def iter_batches(
        self, batch_size: int, *, fields: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Batches in storage order (a simple sequential reader; see ``Loader`` for training)."""
        check_int("batch_size", batch_size)
        for start in range(0, len(self), batch_size):
            yield self.gather(np.arange(start, min(start + batch_size, len(self))), fields=fields)

    def token_stream(self, field: str = "tokens") -> TokenStream:
        """The ragged integer field ``field`` read as one flat token stream (see :class:`TokenStream`)."""
        spec = self._check_field(field)
        if spec.kind != "ragged" or spec.dtype not in ("uint16", "uint32"):
            raise SchemaError(
                f"field {field!r} is {spec.kind} {spec.dtype}; a token stream is a ragged uint16 or uint32 field.",
                field=field,
            )
        parts = [self._mmap(k, field) for k in range(self.num_shards)]
        return TokenStream([p[0] for p in parts], [p[1] for p in parts], spec.np_dtype)  # type: ignore[misc]
