"""Shard sets written piece by piece: one shard per call, the manifest at the end.

:class:`~datafuel.loaders.ShardWriter` writes a shard set from one process. A
distributed build (``datafuel build --engine ray``) instead has many workers, each
writing whole shards straight into the output directory, and a driver that writes
the manifest once every shard is there. These functions are that split, built on the
writer itself (its validation, its file hashing and its manifest), so a shard
written here has exactly the bytes ``ShardWriter`` writes for the same rows when
its cut falls at the same place:

1. :func:`start_shard_set` (driver): create the directory, remove a manifest left
   by an earlier build *before* any data file is touched.
2. :func:`write_shard` (any worker, any order, any number of times): write shard
   ``k`` from an in-memory batch and return its manifest entry. Files are written
   in a private temporary folder and renamed into place, so a retried or duplicated
   task overwrites a shard with identical bytes and a reader never sees half a file.
3. :func:`write_manifest` (driver, last): the manifest from the entries in shard
   order, written atomically; shard files of an earlier, larger build are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datafuel._checks import check_int
from datafuel.errors import ConfigError, ManifestError

from ._manifest import MANIFEST_NAME, fsync_dir
from ._schema import Field
from ._writer import ShardWriter, _on_disk

__all__ = ["start_shard_set", "write_manifest", "write_shard"]

_NO_CUT = 1 << 62  # shard_bytes that no batch reaches: everything goes in one shard
_TMP_PREFIX = ".tmp-shard-"
_TMP_DIR = re.compile(r"^\.tmp-shard-\d{5,}-[0-9a-f]{32}$")


class _OneShard(ShardWriter):
    """A ShardWriter that writes exactly one shard, numbered ``shard``, and no manifest."""

    def __init__(
        self,
        directory: Path,
        fields: Mapping[str, Field],
        *,
        shard: int,
        first_row: int,
        check_finite: bool,
    ) -> None:
        super().__init__(directory, fields, shard_bytes=_NO_CUT, check_finite=check_finite)
        # the writer numbers a shard by how many came before it, and reports rows
        # as shard-set rows counted from the rows it has already written
        self._shards = [{} for _ in range(shard)]
        self._total = first_row
        self._number = shard

    def finish(self) -> dict[str, Any] | None:
        """Close the shard; its manifest entry, or None when no row was written."""
        self._close_shard()
        self._closed = True
        return self._shards[self._number] if len(self._shards) > self._number else None


def start_shard_set(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` and remove its manifest, if any, before shards are written.

    Once this returns the directory is not a readable shard set until
    :func:`write_manifest` runs, so an interrupted build is never mistaken for a
    finished one.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    manifest = path / MANIFEST_NAME
    if manifest.exists():
        manifest.unlink()
        fsync_dir(path)
    return path


def write_shard(
    directory: str | os.PathLike[str],
    fields: Mapping[str, Field],
    batch: Mapping[str, Any],
    *,
    shard: int,
    first_row: int = 0,
    check_finite: bool = True,
) -> dict[str, Any]:
    """Write shard number ``shard`` of a shard set from ``batch``; return its manifest entry.

    Parameters
    ----------
    directory
        The shard set's directory (it must exist: see :func:`start_shard_set`).
    fields
        The field declarations, as given to :class:`~datafuel.loaders.ShardWriter`.
    batch
        ``{field: values}`` holding every row of the shard, in order, in the forms
        ``ShardWriter.write`` accepts. At least one row.
    shard
        The shard's number ``k``; its files are ``shard-0000k.<field>.bin`` (``.idx``).
    first_row
        The shard-set row number of the batch's first row: errors (a NaN, a wrong
        dtype) name shard-set rows, as ``ShardWriter`` does.
    check_finite
        Refuse NaN and inf in float fields, as ``ShardWriter`` does.

    Returns
    -------
    dict
        ``{"rows": N, "files": {...}}``, the entry :func:`write_manifest` expects.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import ShardSet, fixed
    >>> d = start_shard_set(tempfile.mkdtemp())
    >>> f = {"x": fixed("float32", (2,))}
    >>> e1 = write_shard(d, f, {"x": np.ones((3, 2), np.float32)}, shard=1, first_row=4)
    >>> e0 = write_shard(d, f, {"x": np.zeros((4, 2), np.float32)}, shard=0)
    >>> len(ShardSet(write_manifest(d, f, [e0, e1]) and d))
    7
    """
    check_int("shard", shard, low=0)
    check_int("first_row", first_row, low=0)
    target = Path(directory)
    if not target.is_dir():
        raise ConfigError(
            f"{target}: the shard set directory does not exist; call start_shard_set first.",
            path=target,
        )
    tmp = target / f"{_TMP_PREFIX}{shard:05d}-{uuid.uuid4().hex}"
    with _on_disk(tmp):
        tmp.mkdir()
    try:
        entry = _write_one_shard(tmp, fields, batch, shard, first_row, check_finite)
        _move_into_place(entry, tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _write_one_shard(
    tmp: Path,
    fields: Mapping[str, Field],
    batch: Mapping[str, Any],
    shard: int,
    first_row: int,
    check_finite: bool,
) -> dict[str, Any]:
    """Shard ``shard``'s files written into the private folder ``tmp``; its manifest entry."""
    writer = _OneShard(tmp, fields, shard=shard, first_row=first_row, check_finite=check_finite)
    try:
        writer.write(batch)
        entry = writer.finish()
    except BaseException:
        writer.abort()
        raise
    if entry is None:
        raise ConfigError(f"shard {shard}: the batch has no rows; a shard holds at least one.")
    return entry


def _move_into_place(entry: Mapping[str, Any], tmp: Path, target: Path) -> None:
    """Rename the entry's files from ``tmp`` into ``target``, then make the renames durable."""
    for parts in entry["files"].values():
        for f in parts.values():
            with _on_disk(target / f["name"]):
                os.replace(tmp / f["name"], target / f["name"])
    fsync_dir(target)


def write_manifest(
    directory: str | os.PathLike[str],
    fields: Mapping[str, Field],
    entries: Sequence[Mapping[str, Any]],
    *,
    provenance: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    files_here: bool = True,
) -> dict[str, Any]:
    """Write the manifest of shards ``0 .. len(entries) - 1`` (last, atomically); return it.

    ``entries[k]`` is what :func:`write_shard` returned for shard ``k``. The manifest
    is byte for byte the one ``ShardWriter`` writes for the same shards, provenance
    and metadata (``datafuel_version`` is added to the provenance). Every file an
    entry names must be in ``directory`` with the recorded size; shard files no
    entry names (an earlier, larger build) and temporary folders of interrupted
    :func:`write_shard` calls are removed. ``files_here=False``: the files are elsewhere
    (Ray workers uploaded them to a bucket and returned their sizes and sha256), so
    their presence here is not checked.
    """
    path = Path(directory)
    writer = ShardWriter(
        path, fields, shard_bytes=_NO_CUT, provenance=provenance, metadata=metadata
    )
    shards: list[dict[str, Any]] = []
    for k, entry in enumerate(entries):
        files = entry.get("files") if isinstance(entry, Mapping) else None
        if not isinstance(files, Mapping) or set(files) != set(fields):
            raise ManifestError(
                f"{path}: entry for shard {k} must list files for exactly the fields "
                f"{sorted(fields)}.",
                path=path,
            )
        for parts in files.values():
            for f in parts.values():
                expected = f"shard-{k:05d}."
                file = path / str(f["name"])
                if not str(f["name"]).startswith(expected):
                    raise ManifestError(
                        f"{path}: entry {k} names {f['name']!r}, which is not a file of shard {k}.",
                        path=path,
                    )
                if files_here and (not file.is_file() or file.stat().st_size != f["bytes"]):
                    raise ManifestError(
                        f"{file}: missing or not {f['bytes']} bytes; shard {k} was not written "
                        "completely.",
                        path=file,
                    )
        shards.append({"rows": int(entry["rows"]), "files": dict(files)})
    for stale in path.iterdir():
        if _TMP_DIR.match(stale.name) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    writer._shards = shards
    writer._total = sum(s["rows"] for s in shards)
    return writer.close()
