"""Durable, atomic file writes shared by every stage (manifests, checkpoints, recipes, reports).

A reader of a file written here sees the old content or the new, never half of it:
temp file in the same directory, ``fsync``, ``os.replace``, then ``fsync`` of the
directory so that the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "dump_json", "fsync_dir"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or unlink inside ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (and durably unless ``fsync=False``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def dump_json(obj: Any, *, sort_keys: bool = True) -> bytes:
    """Canonical JSON bytes: sorted keys, one-space indent, no NaN, trailing newline."""
    return (json.dumps(obj, indent=1, sort_keys=sort_keys, allow_nan=False) + "\n").encode()


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, fsync: bool = True, sort_keys: bool = True
) -> None:
    """:func:`atomic_write_bytes` of :func:`dump_json`."""
    atomic_write_bytes(path, dump_json(obj, sort_keys=sort_keys), fsync=fsync)
