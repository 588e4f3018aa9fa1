"""A node-local, content-addressed cache of remote shard files, bounded and shared.

Written by hand (no caching library does all of this): every file is verified against
the manifest's sha256 before it becomes visible, the bytes on disk never exceed the
limit (a download reserves its full size first), eviction follows the known future
order instead of recency, and every process and thread on the node shares one copy,
coordinated by ``flock`` on files inside the cache (never ``/dev/shm``): the kernel
drops a killed process's locks, so nothing it leaves behind can block the next run.

Layout of ``DIR``::

    objects/<sha256>          verified files, read-only; the name is the content's hash
    tmp/<sha256>.<pid>.<rnd>  downloads in progress: preallocated to their full size and
                              held with an exclusive flock by their downloader (a file
                              nobody holds is a dead process's: removed at the next scan)
    locks/<sha256>.lock       held exclusively while that object downloads: a second
                              process or thread waits, then finds the object in place
    cache.lock                held exclusively while space is reserved or files evicted

A reader *pins* an object by holding a shared ``flock`` on it (:meth:`ShardCache.pin`).
The evictor takes an exclusive, non-blocking ``flock`` before it unlinks a file: a file
in use by any process is never removed. A pin whose file was unlinked between the open
and the lock sees ``st_nlink == 0`` and starts over.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datafuel._checks import check_int
from datafuel.errors import ConfigError, OutputError

__all__ = ["CacheStats", "ShardCache", "default_cache_dir"]

#: how long a download that finds the cache full of files in use waits between looks
_WAIT_S = 0.02


def default_cache_dir() -> Path:
    """``$DATAFUEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/datafuel/shards`` (``~/.cache/...``)."""
    env = os.environ.get("DATAFUEL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "datafuel" / "shards"


@dataclass
class CacheStats:
    """What this process's cache did: hits, downloads, bytes, evictions, waits."""

    hits: int = 0
    downloads: int = 0
    bytes_downloaded: int = 0
    evictions: int = 0
    bytes_evicted: int = 0
    #: seconds threads spent waiting for space held by files in use
    space_wait_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **kw: float) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


@dataclass(frozen=True)
class Reservation:
    """Room reserved for one download: its lock and its preallocated temp file."""

    sha: str
    size: int
    lock_fd: int
    fd: int
    tmp: Path


class ShardCache:
    """The cache in ``directory``, bounded to ``limit`` bytes (``None``: unbounded).

    Parameters
    ----------
    directory
        Shared by every process on the node that reads remote shard sets (one copy of
        each file per node); created if needed.
    limit
        Most bytes of files (verified and in progress) the directory may hold.
    """

    def __init__(self, directory: str | os.PathLike[str], limit: int | None = None) -> None:
        if limit is not None:
            check_int("cache_limit", limit)
        self.root = Path(directory)
        self.limit = limit
        try:
            for sub in ("objects", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._gfd = os.open(
                self.root / "cache.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise OutputError(
                f"cannot use the cache directory {self.root}: {(exc.strerror or str(exc)).lower()}",
                path=self.root,
                errno=exc.errno,
            ) from exc
        self._glock = threading.Lock()
        self._cond = threading.Condition()
        #: functions sha -> next use (smaller: sooner; inf: not known to be needed)
        self._policies: dict[int, Callable[[str], float]] = {}
        self._ids = iter(range(1 << 62))
        self.stats = CacheStats()

    def __repr__(self) -> str:
        limit = "unbounded" if self.limit is None else f"limit={self.limit}"
        return f"ShardCache({str(self.root)!r}, {limit})"

    def close(self) -> None:
        fd, self._gfd = getattr(self, "_gfd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            return

    # -- policy ------------------------------------------------------------------------
    def add_policy(self, next_use: Callable[[str], float]) -> int:
        """Register a reader's ``next_use(sha)``; eviction takes the farthest first."""
        key = next(self._ids)
        self._policies[key] = next_use
        return key

    def remove_policy(self, key: int) -> None:
        self._policies.pop(key, None)

    def next_use(self, sha: str) -> float:
        best = math.inf
        for fn in list(self._policies.values()):
            best = min(best, fn(sha))
        return best

    # -- public ------------------------------------------------------------------------
    def path_of(self, sha: str) -> Path:
        return self.root / "objects" / sha

    def contains(self, sha: str) -> bool:
        return self.path_of(sha).is_file()

    def used_bytes(self) -> int:
        """Bytes of every verified file and download in progress (what the limit bounds)."""
        with self._locked():
            return sum(size for _, size, _ in self._scan(clean=False))

    def pin(self, sha: str, size: int, fetch: Callable[[int], None]) -> int:
        """A descriptor of ``objects/<sha>`` holding a shared lock; downloaded first if absent.

        ``fetch(fd)`` writes the object (``size`` bytes) into ``fd`` and checks it; it
        runs at most once per node at a time (a second caller waits for the first). Room
        is made by evicting the unpinned file needed farthest in the future, waiting
        while every file is in use. Close the descriptor (:meth:`unpin`) to let the
        file be evicted again.
        """
        fd = self._open_shared(sha)
        if fd is not None:
            self.stats.add(hits=1)
            return fd
        while True:
            lock_fd = os.open(
                self.root / "locks" / f"{sha}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another downloader of it: wait for it
                fd = self._open_shared(sha)
                if fd is not None:  # downloaded meanwhile (by another process or thread)
                    return fd
                reserved = self._reserve(sha, size, None)
                assert reserved is not None  # a demand waits for room
                self._download(sha, size, fetch, *reserved)
                fd = self._open_shared(sha)
                if fd is not None:
                    return fd
            finally:
                os.close(lock_fd)

    def reserve(self, sha: str, size: int, *, before: float) -> Reservation | bool:
        """Room for a prefetch of ``sha``, without waiting and without evicting a file
        next needed at or before ``before`` (its first use, or later: see
        ``RemotePass._keep_until``).

        True: nothing to do (it is cached, or another thread or process is downloading
        it). False: no room without evicting a file needed by ``before``. Otherwise a
        :class:`Reservation` holding the object's download lock and a preallocated temp
        file, to :meth:`fill` (on any thread). A prefetcher that reserves in first-use
        order never lets a later file take the room of an earlier one.
        """
        if self.contains(sha):
            return True
        lock_fd = os.open(
            self.root / "locks" / f"{sha}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                return True  # being downloaded
            if self.contains(sha):
                os.close(lock_fd)
                return True
            got = self._reserve(sha, size, before)
        except BaseException:
            os.close(lock_fd)
            raise
        if got is None:
            os.close(lock_fd)
            return False
        return Reservation(sha, size, lock_fd, *got)

    def fill(self, reservation: Reservation, fetch: Callable[[int], None]) -> None:
        r"""Download an object :meth:`reserve` made room for into place, then let go of its lock."""
        try:
            self._download(
                reservation.sha, reservation.size, fetch, reservation.fd, reservation.tmp
            )
        finally:
            os.close(reservation.lock_fd)

    def cancel(self, reservation: Reservation) -> None:
        """Give back, unused, the room :meth:`reserve` made (its temp file and its lock)."""
        try:
            os.close(reservation.fd)
            reservation.tmp.unlink(missing_ok=True)
        finally:
            os.close(reservation.lock_fd)
            with self._cond:
                self._cond.notify_all()

    def unpin(self, fd: int) -> None:
        os.close(fd)
        with self._cond:
            self._cond.notify_all()

    # -- internals -----------------------------------------------------------------------
    def _open_shared(self, sha: str) -> int | None:
        try:
            fd = os.open(self.path_of(sha), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink == 0:  # evicted between the open and the lock
            os.close(fd)
            return None
        return fd

    def _download(
        self, sha: str, size: int, fetch: Callable[[int], None], tfd: int, tmp: Path
    ) -> None:
        try:
            fetch(tfd)
            os.fchmod(tfd, 0o444)
            with self._locked():  # under the cache lock, so that a scan counts it once
                os.rename(tmp, self.path_of(sha))  # visible only now: verified, whole
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(tfd)
            with self._cond:
                self._cond.notify_all()
        self.stats.add(downloads=1, bytes_downloaded=size)

    def _scan(self, *, clean: bool) -> list[tuple[str, int, bool]]:
        """``(name, bytes, is_object)`` of every file the limit counts (with ``clean``,
        after removing downloads whose process died)."""
        out: list[tuple[str, int, bool]] = []
        for sub, is_obj in (("objects", True), ("tmp", False)):
            try:
                entries = list(os.scandir(self.root / sub))
            except FileNotFoundError:
                continue
            for e in entries:
                try:
                    size = e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                if not is_obj and clean and self._stale(e.path):
                    continue
                out.append((e.name, size, is_obj))
        return out

    @staticmethod
    def _stale(path: str) -> bool:
        """A download nobody holds (its process died): remove it; True when removed."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            os.unlink(path)
            return True
        finally:
            os.close(fd)

    def _reserve(self, sha: str, size: int, before: float | None) -> tuple[int, Path] | None:
        """A preallocated temp file of ``size`` bytes once the limit allows it (evicting)."""
        if self.limit is not None and size > self.limit:
            raise ConfigError(
                f"cache_limit={self.limit} bytes cannot hold one file of {size} bytes "
                f"(object {sha[:16]}...); raise cache_limit to at least {size}.",
                field="cache_limit",
            )
        waited = 0.0
        while True:
            with self._locked():
                if self._make_room(size, before):
                    return self._new_tmp(sha, size)
            if before is not None:
                return None
            t0 = time.perf_counter()
            with self._cond:
                self._cond.wait(_WAIT_S)
            dt = time.perf_counter() - t0
            waited += dt
            self.stats.add(space_wait_s=dt)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The cache lock: this process's threads, then every process on the node."""
        with self._glock:
            fcntl.flock(self._gfd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._gfd, fcntl.LOCK_UN)

    def _make_room(self, size: int, before: float | None) -> bool:
        """Under the cache lock: evict (farthest next use first) until ``size`` fits."""
        files = self._scan(clean=True)
        used = sum(s for _, s, _ in files)
        if self.limit is None or used + size <= self.limit:
            return True
        ranked = sorted(
            ((self.next_use(name), name, s) for name, s, is_obj in files if is_obj),
            key=lambda t: -t[0],
        )
        for when, name, s in ranked:
            if before is not None and when <= before:
                return False  # a prefetch never evicts a file needed sooner than its own
            if self._evict(name):
                used -= s
                self.stats.add(evictions=1, bytes_evicted=s)
                if used + size <= self.limit:
                    return True
        return False

    def _evict(self, name: str) -> bool:
        path = self.path_of(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # pinned by a reader (any process)
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return False
                os.unlink(path)
            except FileNotFoundError:
                return False
            return True
        finally:
            os.close(fd)

    def _new_tmp(self, sha: str, size: int) -> tuple[int, Path]:
        tmp = self.root / "tmp" / f"{sha}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd, tmp
