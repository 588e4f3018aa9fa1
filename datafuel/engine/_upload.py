"""Uploading a finished shard's files to a bucket, skipping those already there whole.

One rule for every engine: a file goes up with its sha256 as metadata, unless the
bucket holds an object of that name with the file's size *and* that ``sha256``
metadata. The listing taken before the set started says which names may be there
(with which size): a name not listed with the file's size is uploaded without asking
the bucket, one listed with it costs one HEAD. The Ray engine's write tasks call
:func:`upload_shard_files` on their workers; a local build's uploader
(:mod:`datafuel.build._remote_out`) calls it on its upload threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from datafuel.loaders._remote import ObjectStore

__all__ = ["object_matches", "shard_files", "upload_shard_files"]

#: ``before_put(key, size, sha256)``: called just before ``key`` is uploaded (not when kept)
BeforePut = Callable[[str, int, str], None]
#: ``on_file(key, size, sha256, uploaded)``: ``key`` is in the bucket whole now
OnFile = Callable[[str, int, str, bool], None]


def shard_files(entry: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The ``{"name", "bytes", "sha256"}`` of each file of one manifest shard entry."""
    for parts in entry["files"].values():
        yield from parts.values()


def object_matches(
    store: ObjectStore, key: str, size: int, sha256: str, listed_size: int | None
) -> bool:
    """Whether ``key`` is in the bucket with ``size`` bytes and ``sha256`` as its metadata.

    ``listed_size`` is the size the listing gave ``key`` (None: not listed); only a
    name listed with ``size`` is looked up (one HEAD).
    """
    if listed_size != size:
        return False
    meta = store.head(key)
    return (
        meta is not None
        and meta["size"] == size
        and str(meta["attributes"].get("sha256", "")) == sha256
    )


def upload_shard_files(
    store: ObjectStore,
    entry: Mapping[str, Any],
    directory: str | os.PathLike[str],
    listed: Mapping[str, int],
    *,
    prefix: str = "",
    before_put: BeforePut | None = None,
    on_file: OnFile | None = None,
) -> dict[str, int]:
    """Upload the files of the shard ``entry`` from ``directory`` as ``prefix + name``.

    ``listed`` maps object keys (``prefix + name``) to their listed sizes. Each file is
    kept when :func:`object_matches`, else uploaded (``before_put`` first). ``on_file(key,
    size, sha256, uploaded)`` is told of each file once it is in the bucket. Returns the counts
    ``{"uploaded", "uploaded_bytes", "already_there"}``. A failed upload raises the
    store's :class:`~datafuel.errors.RemoteError`, naming the object, after its retries.
    """
    counts = {"uploaded": 0, "uploaded_bytes": 0, "already_there": 0}
    for f in shard_files(entry):
        name, size, sha = str(f["name"]), int(f["bytes"]), str(f["sha256"])
        key = prefix + name
        if object_matches(store, key, size, sha, listed.get(key)):
            counts["already_there"] += 1
            uploaded = False
        else:
            if before_put is not None:
                before_put(key, size, sha)
            store.put_file(key, os.path.join(directory, name), sha256=sha)
            counts["uploaded"] += 1
            counts["uploaded_bytes"] += size
            uploaded = True
        if on_file is not None:
            on_file(key, size, sha, uploaded)
    return counts
