"""Reading, validating and atomically writing ``manifest.json``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
import stat
from typing import Any

from datafuel._fs import atomic_write_bytes, dump_json, fsync_dir
from datafuel.errors import ManifestError

from ._schema import MAX_INT, NAME_PATTERN, Field

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "atomic_write_bytes",
    "dump_json",
    "fsync_dir",
    "load_manifest",
    "load_manifest_bytes",
]

FORMAT_NAME = "datafuel-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_FIELD_NAME = re.compile(NAME_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_fd(fd: int, chunk: int = 1 << 22) -> str:
    """sha256 of the file open at ``fd``, read from its start (the descriptor stays open)."""
    h = hashlib.sha256()
    offset = 0
    while True:
        block = os.pread(fd, chunk, offset)
        if not block:
            break
        h.update(block)
        offset += len(block)
    return h.hexdigest()


def check_plain_name(name: Any, *, manifest_path: str) -> str:
    """A file named in a manifest must be a plain name inside the shard directory."""
    if (
        not isinstance(name, str)
        or not _PLAIN_NAME.fullmatch(name)
        or name in (".", "..")
        or name == MANIFEST_NAME
        or os.path.isabs(name)
    ):
        raise ManifestError(
            f"{manifest_path}: file name {name!r} is not a plain file name inside the shard "
            "directory (no '/', '..', absolute paths or the manifest itself); refusing to read it.",
            path=manifest_path,
        )
    return name


def load_manifest(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Field]]:
    """Read and validate a manifest; return it with its parsed fields.

    Every key is checked for its JSON type and range before it is used, and every
    count and size against 2**63 - 1 with exact integer arithmetic (numpy and mmap
    offsets are int64): a malformed manifest raises ManifestError naming the key.
    """
    mpath, manifest = _read_manifest(directory)
    return _check_manifest(mpath, manifest)


def load_manifest_bytes(raw: bytes, where: str) -> tuple[dict[str, Any], dict[str, Field]]:
    """:func:`load_manifest` of a manifest's bytes read elsewhere (an object store);
    ``where`` names it in errors (its URL)."""
    return _check_manifest(where, _parse_manifest(raw, where))


def _check_manifest(
    mpath: str, manifest: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Field]]:
    raw_fields = manifest.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        raise ManifestError(f"{mpath}: 'fields' must be a non-empty object.", path=mpath)
    for name in raw_fields:
        if not _FIELD_NAME.fullmatch(name):
            raise ManifestError(
                f"{mpath}: fields: field name {reprlib.repr(name)} does not match "
                f"{NAME_PATTERN} (FORMAT.md).",
                path=mpath,
            )
    fields = {name: Field.from_json(name, spec, path=mpath) for name, spec in raw_fields.items()}
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise ManifestError(f"{mpath}: 'shards' must be a list.", path=mpath)
    total_rows = total_bytes = 0
    for i, shard in enumerate(shards):
        rows, nbytes = _check_shard(mpath, i, shard, fields)
        total_rows += rows
        total_bytes += nbytes
    _check_total(mpath, "total_rows", manifest.get("total_rows"), total_rows)
    _check_total(mpath, "total_bytes", manifest.get("total_bytes"), total_bytes)
    for key in ("provenance", "metadata"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ManifestError(
                f"{mpath}: {key} must be an object. Got {reprlib.repr(manifest[key])}.",
                path=mpath,
            )
    return manifest, fields


def _check_total(mpath: str, key: str, value: Any, total: int) -> None:
    if total > MAX_INT:
        raise ManifestError(
            f"{mpath}: the shards hold {total} {key[6:]}, more than 2**63 - 1.", path=mpath
        )
    if type(value) is not int or value != total:
        raise ManifestError(
            f"{mpath}: {key} is {reprlib.repr(value)} but the shards hold {total} {key[6:]}.",
            path=mpath,
        )


def _read_manifest(directory: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The manifest's path and its JSON object, of this format and version."""
    mpath = os.path.join(os.fspath(directory), MANIFEST_NAME)
    if not os.path.isdir(directory):
        raise ManifestError(f"{directory}: not a directory of shards.", path=str(directory))
    try:
        fd = os.open(mpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{mpath}: no manifest. The directory is not a shard set, or its build was "
            "interrupted before it finished (rerun the build).",
            path=mpath,
        ) from exc
    except OSError as exc:
        raise ManifestError(
            f"{mpath}: cannot be opened ({_reason(exc)}; a symbolic link is refused).",
            path=mpath,
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ManifestError(f"{mpath}: not a regular file.", path=mpath)
        raw = fh.read()
    return mpath, _parse_manifest(raw, mpath)


def _parse_manifest(raw: bytes, mpath: str) -> dict[str, Any]:
    """The JSON object of a manifest's bytes, of this format and version."""
    try:
        manifest = json.loads(raw)
    except RecursionError as exc:
        raise ManifestError(
            f"{mpath}: JSON nested too deeply to be a manifest.", path=mpath
        ) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of > 4300 digits
        raise ManifestError(f"{mpath}: not valid JSON ({exc}).", path=mpath) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise ManifestError(
            f"{mpath}: format must be {FORMAT_NAME!r}. Got {reprlib.repr(got)}.", path=mpath
        )
    version = manifest.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ManifestError(
            f"{mpath}: unknown format version {reprlib.repr(version)}; this datafuel reads "
            f"version {FORMAT_VERSION}.",
            path=mpath,
        )
    return manifest


def _reason(exc: OSError) -> str:
    """An OSError's reason in lower case (``no space left on device``)."""
    return (exc.strerror or str(exc)).lower()


def _count(mpath: str, key: str, value: Any, field: str | None = None) -> int:
    """``value`` of ``key`` as a count: an int (not a bool) in [0, 2**63 - 1]."""
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise ManifestError(
            f"{mpath}: {key} must be an integer in [0, 2**63 - 1]. Got {reprlib.repr(value)}.",
            path=mpath,
            field=field,
        )
    return value


def _check_shard(mpath: str, i: int, shard: Any, fields: dict[str, Field]) -> tuple[int, int]:
    """Shard ``i``'s rows and bytes, once it lists a well-formed file entry for every field."""
    if not isinstance(shard, dict):
        raise ManifestError(
            f"{mpath}: shards[{i}] must be an object. Got {reprlib.repr(shard)}.", path=mpath
        )
    rows = _count(mpath, f"shards[{i}].rows", shard.get("rows"))
    files = shard.get("files")
    if not isinstance(files, dict) or set(files) != set(fields):
        raise ManifestError(
            f"{mpath}: shards[{i}].files must list files for exactly the fields {sorted(fields)}.",
            path=mpath,
        )
    nbytes = 0
    for fname, spec in fields.items():
        entry = files[fname]
        parts = ("bin", "idx") if spec.kind != "fixed" else ("bin",)
        if not isinstance(entry, dict) or set(entry) != set(parts):
            raise ManifestError(
                f"{mpath}: shards[{i}].files.{fname} must list {parts}.", path=mpath, field=fname
            )
        sizes = {
            part: _check_entry(mpath, f"shards[{i}].files.{fname}.{part}", entry[part], fname)
            for part in parts
        }
        _check_layout(mpath, f"shards[{i}]", rows, fname, spec, sizes)
        nbytes += sum(sizes.values())
    return rows, nbytes


def _check_entry(mpath: str, key: str, f: Any, fname: str) -> int:
    """One file entry ``{"name", "bytes", "sha256"}``; its byte size."""
    if not isinstance(f, dict):
        raise ManifestError(
            f"{mpath}: {key} must be an object with name, bytes and sha256. Got {reprlib.repr(f)}.",
            path=mpath,
            field=fname,
        )
    check_plain_name(f.get("name"), manifest_path=mpath)
    if not isinstance(f.get("sha256"), str) or not _SHA256.fullmatch(f["sha256"]):
        raise ManifestError(
            f"{mpath}: {key}.sha256 must be 64 lower-case hex digits. "
            f"Got {reprlib.repr(f.get('sha256'))}.",
            path=mpath,
            field=fname,
        )
    return _count(mpath, f"{key}.bytes", f.get("bytes"), fname)


def _check_layout(
    mpath: str, key: str, rows: int, fname: str, spec: Field, sizes: dict[str, int]
) -> None:
    """The byte sizes a shard lists for a field fit its rows (exact integers: no overflow)."""
    per_row = spec.row_extent if spec.kind == "fixed" else 8
    if (rows + (spec.kind != "fixed")) * per_row > MAX_INT:
        raise ManifestError(
            f"{mpath}: {key}.rows = {rows} rows of field {fname!r} ({per_row} bytes each"
            f"{'' if spec.kind == 'fixed' else ' of offsets'}) overflow 2**63 - 1 bytes.",
            path=mpath,
            field=fname,
        )
    if spec.kind == "fixed":
        if sizes["bin"] != rows * spec.row_bytes:
            raise ManifestError(
                f"{mpath}: {key}.files.{fname}.bin.bytes is {sizes['bin']} but {rows} rows of "
                f"{spec.dtype}{list(spec.shape)} are {rows * spec.row_bytes} bytes.",
                path=mpath,
                field=fname,
            )
        return
    if sizes["idx"] != 8 * (rows + 1) or sizes["bin"] % spec.itemsize:
        raise ManifestError(
            f"{mpath}: {key}.files.{fname}: idx.bytes must be 8 * (rows + 1) = {8 * (rows + 1)} "
            f"and bin.bytes a multiple of {spec.itemsize}. Got {sizes['idx']} and {sizes['bin']}.",
            path=mpath,
            field=fname,
        )
