"""Builds into object storage: ``out="s3://bucket/prefix"`` (also ``gs://``, ``az://``).

A build to a bucket runs exactly as a local one, into a **staging directory** on this
machine (``stage_dir=``/``--stage-dir``, else ``$XDG_CACHE_HOME/datafuel/stage/<h>``
where ``h`` is the first 16 hex digits of the sha256 of the credential-free URL), and
the stage is uploaded as it is finished:

* each shard as soon as the local engine's writer has finished it (its files complete
  and synced on the stage; ``on_shard``, see :class:`~datafuel.engine.LocalEngine`):
  its files go up in the background on the build's upload threads (8, shared by
  every set) while the build writes the next shards. At most 16 finished shards of a
  set wait for their upload at once (past that the build waits for the oldest), and
  an upload that failed past the store's retries stops the build with that
  :class:`~datafuel.errors.RemoteError`, naming the object, at the set's next shard
  or at its close (the uploads still queued are dropped, the running ones awaited);
* just before a file of a set is first uploaded, an older manifest of that set in
  the bucket is deleted, unless it names that very file (same size and sha256: a
  rerun putting back an object that went missing), so no reader ever sees a
  manifest claiming a file that was replaced;
* each set's ``manifest.json`` when its sink closes, **last**: after every shard
  upload of the set has succeeded (a failed build leaves no new manifest), and only
  when the bucket does not hold this very manifest already; then shard objects the
  new manifest does not name are deleted. A reader never sees a set whose manifest
  claims files it does not have;
* once the build returns, every set again (only the ones not uploaded during this
  run: a resumed build that found its output finished wrote nothing), then the
  top-level files (``split.json``, ``recipe.json`` and its ``.npy``, ``tokenizer.json``,
  ``dedup.json``, reports) after all sets. Hidden files (the lock, a build's resume
  state, work folders) stay on the stage.

With ``--engine ray`` the workers upload the shards themselves (the engine's
``uploads_shards``; see :mod:`datafuel.engine._ray`): each write task writes its shard
on its own worker's disk, uploads it and returns the files' sizes and sha256, so the
stage receives only each set's manifest and the top-level files, and a Ray build to a
bucket needs no filesystem shared between the driver and the workers. The older
manifest of a set is then deleted when the set starts (before any worker replaces a
file), and the new one still goes up last, after every task returned. The workers
read the credentials from **their own** environment: a local Ray instance started by
the build inherits the driver's; on a cluster they must be set on every node (never
through ``runtime_env={"env_vars": ...}``, which would keep the secrets in Ray's GCS).

Resume: an object already in the bucket with the local file's size and whose
``sha256`` metadata is the local file's sha256 (taken from the manifest for shard
files) is not uploaded again; everything else is (one rule for every engine:
:mod:`datafuel.engine._upload`). A build's bytes depend only on its arguments, so an
interrupted build rerun on any machine (stage or not) uploads only what is missing.
Objects go up with their sha256 as metadata.

Before any heavy work the bucket is checked: one small probe object is written and
deleted (``.datafuel-write-check``), and the prefix is listed; a missing bucket or a
refusal is one :class:`~datafuel.errors.RemoteError` naming the URL. ``https://`` and
``http://`` shard sets are read-only: a build there is a
:class:`~datafuel.errors.ConfigError`. Credentials come from each cloud's standard
environment (``AWS_*``...) and are never written anywhere: paths and messages carry
the URL without user info or query.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datafuel.engine import Engine, RowsCallback, ShardSink, ShardUpload, UnitFn
from datafuel.engine._upload import object_matches, shard_files, upload_shard_files
from datafuel.errors import ConfigError, RemoteError
from datafuel.loaders import Field
from datafuel.loaders._remote import ObjectStore, is_remote, redact_url

from ._common import engine_for

__all__ = ["PROBE_NAME", "RemoteOut", "default_stage_dir", "is_remote", "run_remote"]

#: The object written and deleted to check that the bucket takes writes.
PROBE_NAME = ".datafuel-write-check"
_MANIFEST = "manifest.json"
_SPLITS = ("train", "val", "test")
_SHARD_FILE = re.compile(r"^shard-\d{5,}\.[A-Za-z0-9_][A-Za-z0-9_-]*\.(bin|idx)$")
#: upload threads of one build (every set's shards share them)
_UPLOAD_THREADS = 8
#: finished shards of one set waiting for (or in) upload at most; past that the build waits
_SHARDS_QUEUED = 2 * _UPLOAD_THREADS


def default_stage_dir(url: str) -> Path:
    """Where a build to ``url`` is staged: ``$XDG_CACHE_HOME/datafuel/stage/<sha256[:16]>``.

    The digest is of the URL without user info, query or trailing slash, so no
    credential reaches the path, and the same ``--out`` always stages in one place.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(redact_url(url).rstrip("/").encode()).hexdigest()[:16]
    return Path(base) / "datafuel" / "stage" / key


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_files(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every data file a manifest names (``{"name", "bytes", "sha256"}``), in shard order."""
    return [f for s in manifest.get("shards", []) for f in shard_files(s)]


class RemoteOut:
    """One build's bucket prefix and its local stage; uploads what the stage finishes.

    Parameters
    ----------
    url
        ``s3://bucket/prefix`` (or ``gs://``, ``az://``).
    stage_dir
        The staging directory (default :func:`default_stage_dir`).
    """

    def __init__(self, url: str, stage_dir: str | os.PathLike[str] | None = None) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme in ("http", "https"):
            raise ConfigError(
                f"--out {redact_url(url)}: an {scheme}:// shard set is read-only; build to "
                "s3://, gs:// or az:// (or a local directory) instead.",
                path=redact_url(url),
            )
        self.url = redact_url(url).rstrip("/")
        self.store = ObjectStore(url)
        self.stage = Path(stage_dir) if stage_dir is not None else default_stage_dir(url)
        self.stage = Path(os.path.abspath(self.stage))
        #: object name -> size, as listed at the start (kept up to date by uploads)
        self._listed: dict[str, int] = {}
        #: object name -> sha256 of what this run uploaded there or found there whole
        self._verified: dict[str, str] = {}
        #: set folder -> the files ``{name: (bytes, sha256)}`` its manifest in the bucket
        #: names (read when a file of the set is about to go up; None: unreadable)
        self._old: dict[str, dict[str, tuple[int, str]] | None] = {}
        #: set folder (relative to the stage) -> sha256 of the manifest uploaded this run
        self._synced: dict[str, str] = {}
        self._lock = threading.Lock()  # the dicts above and the counts, across upload threads
        self._set_locks: dict[str, threading.Lock] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.uploaded = 0
        self.uploaded_bytes = 0
        self.kept = 0
        self.deleted = 0

    def __repr__(self) -> str:
        return f"RemoteOut({self.url!r}, stage_dir={str(self.stage)!r})"

    def close(self) -> None:
        """Stop the upload threads (uploads still queued are dropped: the build failed)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    _UPLOAD_THREADS, thread_name_prefix="datafuel-upload"
                )
            return self._pool

    # -- before the build -----------------------------------------------------------------
    def check(self) -> None:
        """Write and delete a probe object, then list the prefix: one RemoteError if refused."""
        try:
            self.store.put_bytes(PROBE_NAME, b"")
            self.store.delete(PROBE_NAME)
            self._listed = {o["path"]: o["size"] for o in self.store.list()}
        except RemoteError as exc:
            raise RemoteError(
                f"--out {self.url}: cannot write the build there (does the bucket exist, and "
                f"may these credentials write to it?): {exc}",
                path=self.url,
                attempts=getattr(exc, "attempts", None),
            ) from None
        self._listed.pop(PROBE_NAME, None)

    # -- uploads --------------------------------------------------------------------------
    def _key(self, rel: str, name: str) -> str:
        return f"{rel}/{name}" if rel else name

    def _present(self, key: str, size: int, sha256: str) -> bool:
        """Whether ``key`` is in the bucket with this size and this sha256 metadata."""
        return object_matches(self.store, key, size, sha256, self._listed.get(key))

    def _count(self, key: str, size: int, sha256: str, uploaded: bool) -> None:
        """``key`` is in the bucket now with this content: uploaded by this run, or kept."""
        with self._lock:
            self._listed[key] = size
            self._verified[key] = sha256
            if uploaded:
                self.uploaded += 1
                self.uploaded_bytes += size
            else:
                self.kept += 1

    def _put(self, key: str, path: Path, size: int, sha256: str) -> bool:
        """Upload ``path`` as ``key`` unless it is there already; whether it was uploaded."""
        if self._verified.get(key) == sha256:  # this run put it there or checked it
            return False
        if self._present(key, size, sha256):
            self._count(key, size, sha256, uploaded=False)
            return False
        self.store.put_file(key, path, sha256=sha256)
        self._count(key, size, sha256, uploaded=True)
        return True

    def _delete(self, key: str) -> None:
        self.store.delete(key)
        with self._lock:
            self._listed.pop(key, None)
            self._verified.pop(key, None)
            self.deleted += 1

    def _rel(self, directory: str | os.PathLike[str]) -> str:
        d = Path(os.path.abspath(directory))
        try:
            rel = d.relative_to(self.stage).as_posix()
        except ValueError:
            raise ConfigError(
                f"{d}: a shard set outside the stage {self.stage} cannot be uploaded to {self.url}."
            ) from None
        return "" if rel == "." else rel

    def set_url(self, rel: str) -> str:
        """The credential-free URL of the set folder ``rel`` (what the workers upload to)."""
        return f"{self.url}/{rel}" if rel else self.url

    def begin_worker_set(self, directory: str | os.PathLike[str]) -> ShardUpload:
        """Before workers upload the set ``directory``: its older manifest deleted; where to put it.

        The returned :class:`~datafuel.engine.ShardUpload` carries the set folder's URL
        and the shard objects listed there (name -> size) for the workers' resume check.
        """
        rel = self._rel(directory)
        mkey = self._key(rel, _MANIFEST)
        if mkey in self._listed:
            self._delete(mkey)  # unreadable before any worker replaces one of its files
        prefix = f"{rel}/" if rel else ""
        listed = {k[len(prefix) :]: self._listed.get(k, 0) for k in self._set_objects(rel)}
        self._synced.pop(rel, None)
        return ShardUpload(self.set_url(rel), listed)

    def add_worker_uploads(self, counts: Mapping[str, int]) -> None:
        """Count what the workers uploaded (and found there) for :meth:`report`."""
        with self._lock:
            self.uploaded += int(counts.get("uploaded", 0))
            self.uploaded_bytes += int(counts.get("uploaded_bytes", 0))
            self.kept += int(counts.get("already_there", 0))

    def begin_local_set(self, directory: str | os.PathLike[str]) -> _ShardUploads:
        """The uploader of the set ``directory``, told of each shard as the local sink finishes it."""
        rel = self._rel(directory)
        self._synced.pop(rel, None)
        return _ShardUploads(self, rel)

    def _set_lock(self, rel: str) -> threading.Lock:
        with self._lock:
            return self._set_locks.setdefault(rel, threading.Lock())

    def _old_files(self, mkey: str) -> dict[str, tuple[int, str]] | None:
        """The files the manifest ``mkey`` in the bucket names (None: it cannot be read)."""
        try:
            old = json.loads(self.store.get_bytes(mkey))
            return {
                str(f["name"]): (int(f["bytes"]), str(f["sha256"])) for f in _manifest_files(old)
            }
        except (RemoteError, ValueError, KeyError, TypeError, AttributeError):
            return None  # deleted below, as a manifest naming other files would be

    def _before_put(self, rel: str, key: str, size: int, sha256: str) -> None:
        """Before ``key`` of the set ``rel`` is written: the set's older manifest deleted.

        Unless that manifest names this very file (its size and sha256: a rerun putting
        back an object that went missing), it goes first, so no reader ever sees it
        claim a file that was replaced. The set's uploads wait for each other here.
        """
        mkey = self._key(rel, _MANIFEST)
        with self._set_lock(rel):
            if mkey not in self._listed:
                return
            if rel not in self._old:
                self._old[rel] = self._old_files(mkey)
            old = self._old[rel]
            if old is not None and old.get(key.rpartition("/")[2]) == (size, sha256):
                return
            self._delete(mkey)
            self._old.pop(rel, None)

    def _upload_shard(self, rel: str, entry: Mapping[str, Any]) -> None:
        """The files of one finished shard of the set ``rel`` uploaded from the stage."""
        upload_shard_files(
            self.store,
            entry,
            self.stage / rel,
            self._listed,
            prefix=f"{rel}/" if rel else "",
            before_put=lambda key, size, sha: self._before_put(rel, key, size, sha),
            on_file=self._count,
        )

    def _put_data(self, rel: str, d: Path, f: Mapping[str, Any], in_bucket: bool) -> None:
        key = self._key(rel, str(f["name"]))
        if in_bucket:  # uploaded (or found whole) by a worker: size and sha256 checked there
            with self._lock:
                self._listed[key] = int(f["bytes"])
            return
        path = d / str(f["name"])
        if not path.is_file():  # a set a Ray build's workers uploaded, found whole here
            if not self._present(key, f["bytes"], f["sha256"]):
                raise RemoteError(
                    f"{self.url_of(key)}: not in the bucket and not on the stage {d} (a Ray "
                    "build's workers uploaded it); build again to write it.",
                    path=self.url_of(key),
                )
            self._count(key, int(f["bytes"]), str(f["sha256"]), uploaded=False)
            return
        self._put(key, path, f["bytes"], f["sha256"])

    def url_of(self, key: str) -> str:
        return f"{self.url}/{key}"

    def sync_set(self, directory: str | os.PathLike[str], *, in_bucket: bool = False) -> None:
        """Upload the finished shard set ``directory`` (in the stage): data files, then manifest.

        Data files this run uploaded already (a local sink's shards, as each finished)
        are not looked at again. ``in_bucket``: the workers uploaded the data files
        (the stage holds the manifest alone); only the manifest goes up. Then shard
        objects the manifest does not name are deleted.
        """
        rel = self._rel(directory)
        d = self.stage / rel
        raw = (d / _MANIFEST).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if self._synced.get(rel) == digest:
            return
        files = _manifest_files(json.loads(raw))
        mkey = self._key(rel, _MANIFEST)
        if mkey in self._listed and not self._present(mkey, len(raw), digest):
            self._delete(mkey)  # an older set: unreadable before any of its files change
        for _ in self._executor().map(lambda f: self._put_data(rel, d, f, in_bucket), files):
            pass
        if not self._present(mkey, len(raw), digest):
            self.store.put_bytes(mkey, raw, sha256=digest)
            self._count(mkey, len(raw), digest, uploaded=True)
            self._old.pop(rel, None)  # what an earlier manifest of the set named: stale now
        else:
            self._count(mkey, len(raw), digest, uploaded=False)
        self._drop_stale(rel, {f["name"] for f in files})
        self._synced[rel] = digest

    def _set_objects(self, rel: str) -> list[str]:
        """Shard objects listed directly in the set folder ``rel`` of the bucket."""
        prefix = f"{rel}/" if rel else ""
        with self._lock:  # other sets' upload threads may be adding names
            keys = list(self._listed)
        return [k for k in keys if k.startswith(prefix) and _SHARD_FILE.match(k[len(prefix) :])]

    def _drop_stale(self, rel: str, keep: set[str]) -> None:
        prefix = f"{rel}/" if rel else ""
        for key in self._set_objects(rel):
            if key[len(prefix) :] not in keep:
                self._delete(key)

    def _clear_set(self, rel: str) -> None:
        """A set this build left empty (fraction 0): its manifest goes first, then its shards."""
        mkey = self._key(rel, _MANIFEST)
        if mkey in self._listed:
            self._delete(mkey)
        for key in self._set_objects(rel):
            self._delete(key)

    def finish(self) -> None:
        """Upload every set not uploaded yet, then the top-level files (after the sets)."""
        root_set = (
            _read_json(self.stage / _MANIFEST) if (self.stage / _MANIFEST).is_file() else None
        )
        if root_set is not None:  # resample writes its set in out itself
            self.sync_set(self.stage)
        else:
            self._sync_split_folders()
        own = {f["name"] for f in _manifest_files(root_set)} | {_MANIFEST} if root_set else set()
        for p in sorted(self.stage.iterdir()):
            if p.name.startswith(".") or not p.is_file() or p.is_symlink() or p.name in own:
                continue
            self._put(p.name, p, p.stat().st_size, _sha256_file(p))

    def _sync_split_folders(self) -> None:
        """Each set folder of the stage uploaded; a split this build left empty cleared."""
        for d in sorted(p for p in self.stage.iterdir() if p.is_dir() and not p.is_symlink()):
            if d.name.startswith("."):
                continue
            if (d / _MANIFEST).is_file():
                self.sync_set(d)
            elif d.name in _SPLITS:
                self._clear_set(d.name)
        for name in _SPLITS:
            if not (self.stage / name).is_dir():
                self._clear_set(name)

    def report(self) -> dict[str, Any]:
        """What was uploaded: for the build's summary (``remote``)."""
        return {
            "url": self.url,
            "stage_dir": str(self.stage),
            "uploaded": self.uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "already_there": self.kept,
            "deleted": self.deleted,
        }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class _ShardUploads:
    """The uploads of one local set's shards, each started as the sink finishes it.

    Called (as the sink's ``on_shard``) on the thread that feeds the sink, with each
    finished shard's entry: its files go up on the build's upload threads while the
    build writes the next shards. At most ``_SHARDS_QUEUED`` shards wait at once (the
    build waits past that), and an upload that failed is raised here, on the build's
    thread, at the next shard or at :meth:`wait`.
    """

    def __init__(self, remote: RemoteOut, rel: str) -> None:
        self._remote = remote
        self._rel = rel
        self._pending: deque[Future[None]] = deque()

    def __call__(self, entry: Mapping[str, Any]) -> None:
        for fut in [f for f in self._pending if f.done()]:
            self._pending.remove(fut)
            fut.result()  # an upload that failed: the set stops here
        pool = self._remote._executor()
        self._pending.append(pool.submit(self._remote._upload_shard, self._rel, entry))
        while len(self._pending) > _SHARDS_QUEUED:
            self._pending[0].result()
            self._pending.popleft()

    def wait(self) -> None:
        """Until every shard reported so far is in the bucket (its first failure raised)."""
        while self._pending:
            self._pending[0].result()
            self._pending.popleft()

    def cancel(self) -> None:
        """Drop the queued uploads and wait for the running ones (the set failed already)."""
        pending, self._pending = list(self._pending), deque()
        for fut in pending:
            fut.cancel()
        for fut in pending:
            if not fut.cancelled():
                fut.exception()  # its error is not raised: the set's first error is on its way


class _UploadingSink(ShardSink):
    """An engine's sink whose clean close also uploads the set it wrote.

    ``uploads``: the inner (local) sink reports each finished shard to it, so the
    shards are in the bucket already, or on their way, when it closes. ``in_bucket``:
    the inner sink's tasks uploaded the data files themselves (Ray). Either way the
    close waits for them, then uploads the manifest (and any file still missing).
    """

    def __init__(
        self,
        inner: ShardSink,
        remote: RemoteOut,
        *,
        in_bucket: bool = False,
        uploads: _ShardUploads | None = None,
    ) -> None:
        self._inner = inner
        self._remote = remote
        self._in_bucket = in_bucket
        self._uploads = uploads
        self.directory = inner.directory

    def submit(self, payload: Any) -> None:
        self._inner.submit(payload)

    def close(self) -> dict[str, Any]:
        if self.manifest is not None:
            return self.manifest
        manifest = self._inner.close()
        if self._in_bucket:
            self._remote.add_worker_uploads(getattr(self._inner, "upload_stats", {}))
        if self._uploads is not None:
            self._uploads.wait()  # every shard of the set in the bucket before its manifest
        self._remote.sync_set(self.directory, in_bucket=self._in_bucket)
        self.manifest = manifest
        return manifest

    def abort(self) -> None:
        self._inner.abort()
        if self._uploads is not None:
            self._uploads.cancel()
        if self._in_bucket:  # what the workers uploaded before the failure still counts
            self._remote.add_worker_uploads(getattr(self._inner, "upload_stats", {}))


class UploadingEngine(Engine):
    """``inner`` whose shard sinks upload each shard to ``remote`` as it is finished.

    An engine whose tasks upload their own shards (``inner.uploads_shards``: Ray) is
    given the set's bucket folder, and its workers write and upload the shard files
    (the stage gets the manifest alone). An engine that reports each finished shard
    (``inner.reports_shards``: local) has the driver upload it from the stage in the
    background. Any other uploads each set from the stage when its sink closes. The
    manifest goes up when the sink closes, after every shard of its set.
    """

    def __init__(self, inner: Engine, remote: RemoteOut) -> None:
        self.inner = inner
        self.remote = remote
        self.name = inner.name

    def __repr__(self) -> str:
        return f"UploadingEngine({self.inner!r}, {self.remote!r})"

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        *,
        shared: Any = None,
        chunk: int = 256,
    ) -> Iterator[Any]:
        return self.inner.map(fn, items, shared=shared, chunk=chunk)

    def shard_sink(
        self,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        *,
        shared: Any = None,
        shard_bytes: int,
        provenance: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        check_finite: bool = True,
        on_rows: RowsCallback | None = None,
    ) -> ShardSink:
        kw: dict[str, Any] = {
            "shared": shared,
            "shard_bytes": shard_bytes,
            "provenance": provenance,
            "metadata": metadata,
            "check_finite": check_finite,
            "on_rows": on_rows,
        }
        if getattr(self.inner, "uploads_shards", False):
            upload = self.remote.begin_worker_set(directory)
            inner = self.inner.shard_sink(directory, fields, fn, upload=upload, **kw)  # type: ignore[call-arg]
            return _UploadingSink(inner, self.remote, in_bucket=True)
        if getattr(self.inner, "reports_shards", False):
            uploads = self.remote.begin_local_set(directory)
            inner = self.inner.shard_sink(directory, fields, fn, on_shard=uploads, **kw)  # type: ignore[call-arg]
            return _UploadingSink(inner, self.remote, uploads=uploads)
        inner = self.inner.shard_sink(directory, fields, fn, **kw)
        return _UploadingSink(inner, self.remote)

    def close(self) -> None:
        """The inner engine is closed by whoever made it."""


def run_remote(build: Callable[..., dict[str, Any]], args: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``build(**args)`` into the stage of ``args["out"]`` (a bucket URL) and upload it.

    ``args`` are the build's own arguments (its ``locals()`` on entry). The summary's
    ``out`` is the URL (without credentials); ``remote`` says what was uploaded.
    """
    kw = dict(args)
    url = str(kw.pop("out"))
    remote = RemoteOut(url, kw.pop("stage_dir", None))
    with engine_for(kw.pop("engine", None)) as runner:  # a bad engine name: refused first
        remote.check()  # a missing or read-only bucket: refused before any work
        try:
            summary = build(out=remote.stage, engine=UploadingEngine(runner, remote), **kw)
            remote.finish()
        finally:
            remote.close()
    return {**summary, "out": remote.url, "remote": remote.report()}
