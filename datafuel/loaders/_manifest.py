"""Reading, validating and atomically writing ``manifest.json``."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from datafuel._fs import atomic_write_bytes, dump_json, fsync_dir
from datafuel.errors import ManifestError

from ._schema import Field

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "atomic_write_bytes",
    "dump_json",
    "fsync_dir",
    "load_manifest",
]

FORMAT_NAME = "datafuel-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def check_plain_name(name: Any, *, manifest_path: str) -> str:
    """A file named in a manifest must be a plain name inside the shard directory."""
    if (
        not isinstance(name, str)
        or not _PLAIN_NAME.match(name)
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
    """Read and validate a manifest; return it with its parsed fields."""
    mpath, manifest = _read_manifest(directory)
    raw_fields = manifest.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        raise ManifestError(f"{mpath}: 'fields' must be a non-empty object.", path=mpath)
    fields = {name: Field.from_json(name, spec, path=mpath) for name, spec in raw_fields.items()}
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise ManifestError(f"{mpath}: 'shards' must be a list.", path=mpath)
    total = sum(_check_shard(mpath, i, shard, fields) for i, shard in enumerate(shards))
    if manifest.get("total_rows") != total:
        raise ManifestError(
            f"{mpath}: total_rows is {manifest.get('total_rows')!r} but the shards hold {total} rows.",
            path=mpath,
        )
    return manifest, fields


def _read_manifest(directory: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The manifest's path and its JSON object, of this format and version."""
    mpath = os.path.join(os.fspath(directory), MANIFEST_NAME)
    if not os.path.isdir(directory):
        raise ManifestError(f"{directory}: not a directory of shards.", path=str(directory))
    try:
        with open(mpath, "rb") as fh:
            manifest = json.loads(fh.read())
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{mpath}: no manifest. The directory is not a shard set, or its build was "
            "interrupted before it finished (rerun the build).",
            path=mpath,
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{mpath}: not valid JSON ({exc}).", path=mpath) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ManifestError(
            f"{mpath}: format must be {FORMAT_NAME!r}. Got {manifest.get('format') if isinstance(manifest, dict) else manifest!r}.",
            path=mpath,
        )
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{mpath}: unknown format version {version!r}; this datafuel reads version {FORMAT_VERSION}.",
            path=mpath,
        )
    return mpath, manifest


def _check_shard(mpath: str, i: int, shard: Any, fields: dict[str, Field]) -> int:
    """Shard ``i``'s row count, once it lists a well-formed file entry for every field."""
    if not isinstance(shard, dict) or not isinstance(shard.get("rows"), int) or shard["rows"] < 0:
        raise ManifestError(f"{mpath}: shard {i} has no valid 'rows'.", path=mpath)
    files = shard.get("files")
    if not isinstance(files, dict) or set(files) != set(fields):
        raise ManifestError(
            f"{mpath}: shard {i} must list files for exactly the fields {sorted(fields)}.",
            path=mpath,
        )
    for fname, spec in fields.items():
        entry = files[fname]
        parts = ("bin", "idx") if spec.kind != "fixed" else ("bin",)
        if not isinstance(entry, dict) or set(entry) != set(parts):
            raise ManifestError(
                f"{mpath}: shard {i} field {fname!r} must list {parts}.", path=mpath, field=fname
            )
        for part in parts:
            f = entry[part]
            if (
                not isinstance(f, dict)
                or not isinstance(f.get("bytes"), int)
                or not isinstance(f.get("sha256"), str)
            ):
                raise ManifestError(
                    f"{mpath}: shard {i} field {fname!r} {part} entry is malformed.",
                    path=mpath,
                    field=fname,
                )
            check_plain_name(f.get("name"), manifest_path=mpath)
    rows: int = shard["rows"]
    return rows
