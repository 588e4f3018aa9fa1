"""``RemoteShardSet``: a shard set in object storage, read through the node's :class:`ShardCache`.

A remote set is a :class:`ShardSet` whose files are mapped from the cache while a read
holds them (*pinned*): between reads nothing of it is mapped, so the cache may evict any
file no read is using. :meth:`RemoteShardSet.begin_pass` is how a :class:`Loader` hands
over its pass's future: the files every batch will read, in order. The pass then

- pins batch ``j``'s files before batch ``j`` is gathered, in batch order (two workers
  never each hold half of what the other needs, so a limit that holds one batch's
  files is enough to make progress);
- prefetches the next files in that order on a few threads, far enough ahead that
  downloads overlap the training step, evicting for them only what Belady's rule
  would evict by the time they are needed (:meth:`RemotePass._keep_until`);
- tells the cache each file's next use, so that eviction removes the file needed
  farthest in the future (Belady's rule) and never one in use.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from datafuel.errors import ConfigError, CorruptShardError, ManifestError, RemoteNotFoundError

from ._cache import Reservation, ShardCache, default_cache_dir
from ._manifest import MANIFEST_NAME, load_manifest_bytes
from ._reader import ShardSet
from ._remote import ObjectStore, redact_url
from ._tokens import TokenStream

__all__ = ["RemoteShardSet", "open_cache"]

#: how many batches ahead of the loop a pass prefetches files (latency hiding needs a few;
#: more only displaces files kept for a later reuse)
PREFETCH_BATCHES = 16

_CACHES: dict[tuple[str, int | None], ShardCache] = {}
_CACHES_LOCK = threading.Lock()


def open_cache(directory: str | os.PathLike[str] | None, limit: int | None) -> ShardCache:
    """This process's :class:`ShardCache` for ``directory`` (one per directory and limit)."""
    root = os.path.realpath(default_cache_dir() if directory is None else directory)
    with _CACHES_LOCK:
        cache = _CACHES.get((root, limit))
        if cache is None:
            cache = _CACHES[(root, limit)] = ShardCache(root, limit)
        return cache


class _URL(str):
    """A remote set's location: prints as its URL, joins names with ``/``."""

    def __truediv__(self, other: str) -> _URL:
        return _URL(f"{self.rstrip('/')}/{other}")


class RemoteShardSet(ShardSet):
    """A shard set at ``url`` (``s3://bucket/prefix``, ``gs://``, ``az://``, ``https://``).

    Parameters
    ----------
    url
        Where the set's ``manifest.json`` and files are. The manifest is read (and
        validated) at once; data files are downloaded when first read, verified
        against the manifest's sha256, and kept in the cache.
    cache_dir
        The node's cache (default ``$DATAFUEL_CACHE_DIR``, else
        ``~/.cache/datafuel/shards``), shared by every process and every set.
    cache_limit
        Most bytes the cache may hold (``None``: no limit).
    verify
        Download and check every file now.

    Examples
    --------
    ``RemoteShardSet("s3://bucket/sets/train", cache_limit=8 << 30).gather([0, 5])``;
    a :class:`Loader` given the URL opens one itself.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
        verify: bool = False,
    ) -> None:
        self.store = ObjectStore(url)
        self.url = redact_url(self.store.url)
        self.directory = _URL(self.url)  # type: ignore[assignment]
        where = f"{self.url}/{MANIFEST_NAME}"
        try:
            raw = self.store.get_bytes(MANIFEST_NAME)
        except RemoteNotFoundError:
            raise ManifestError(
                f"{where}: no manifest. The prefix is not a shard set, or its upload has not "
                "finished (a build uploads the manifest last).",
                path=where,
            ) from None
        self._setup(*load_manifest_bytes(raw, where))
        self._root = self.url
        self.cache = open_cache(cache_dir, cache_limit)
        self._pin_lock = threading.Lock()
        #: (shard, field) -> [pin count, {part: descriptor}]
        self._pins: dict[tuple[int, str], list[Any]] = {}
        self._fd_of: dict[str, int] = {}  # sha256 -> a pinned descriptor of it
        #: pinned for the set's lifetime (token streams, field_array)
        self._forever: set[tuple[int, str]] = set()
        #: field -> its lazy token stream (its shards' mappings dropped as pins end)
        self._streams: dict[str, TokenStream] = {}
        #: sha256 -> the shards whose files have that content
        self._shards_of: dict[str, list[int]] = {}
        for k, shard in enumerate(self.shards):
            for parts in shard["files"].values():
                for entry in parts.values():
                    self._shards_of.setdefault(entry["sha256"], []).append(k)
        if verify:
            self.verify()

    def __repr__(self) -> str:
        return super().__repr__().replace("ShardSet(", "RemoteShardSet(", 1)

    def close(self) -> None:
        """Let go of every pinned file (including token streams')."""
        with self._pin_lock:
            keys = list(self._pins)
            self._forever.clear()
        for key in keys:
            with self._pin_lock:
                entry = self._pins.get(key)
                if entry is not None:
                    entry[0] = 1
            self._unpin([key])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            return

    # -- sizes ---------------------------------------------------------------------------
    def shard_bytes(self, fields: Sequence[str] | None = None) -> np.ndarray:
        """Bytes of each shard's files of ``fields`` (default all): what reading it costs."""
        names = list(self.fields) if fields is None else list(fields)
        return np.array(
            [
                sum(e["bytes"] for f in names for e in shard["files"][f].values())
                for shard in self.shards
            ],
            dtype=np.int64,
        )

    # -- pins ----------------------------------------------------------------------------
    def _fetcher(self, entry: dict[str, Any]) -> Any:
        name, size, sha = entry["name"], entry["bytes"], entry["sha256"]

        def fetch(fd: int) -> None:
            self.store.download(name, fd, size=size, sha256=sha)

        return fetch

    def _pin(self, keys: Iterable[tuple[int, str]]) -> None:
        done: list[tuple[int, str]] = []
        try:
            for key in keys:
                with self._pin_lock:
                    entry = self._pins.get(key)
                    if entry is not None:
                        entry[0] += 1
                        done.append(key)
                        continue
                fds = self._pin_files(*key)
                with self._pin_lock:
                    entry = self._pins.get(key)
                    if entry is not None:  # another thread pinned it meanwhile
                        entry[0] += 1
                        spare = fds
                    else:
                        self._pins[key] = [1, fds]
                        for part, fd in fds.items():
                            self._fd_of[self.shards[key[0]]["files"][key[1]][part]["sha256"]] = fd
                        spare = {}
                    done.append(key)
                for fd in spare.values():
                    self.cache.unpin(fd)
        except BaseException:
            self._unpin(done)
            raise

    def _pin_files(self, k: int, field: str) -> dict[str, int]:
        fds: dict[str, int] = {}
        try:
            for part, entry in self.shards[k]["files"][field].items():
                fd = self.cache.pin(entry["sha256"], entry["bytes"], self._fetcher(entry))
                fds[part] = fd
                size = os.fstat(fd).st_size
                if size != entry["bytes"]:  # a cache file of another size under that name
                    raise CorruptShardError(
                        f"{self.cache.path_of(entry['sha256'])}: cached copy of "
                        f"{self.url}/{entry['name']} is {size} bytes, the manifest says "
                        f"{entry['bytes']}; remove it from the cache.",
                        path=str(self.cache.path_of(entry["sha256"])),
                        field=field,
                    )
        except BaseException:
            for fd in fds.values():
                self.cache.unpin(fd)
            raise
        return fds

    def _unpin(self, keys: Iterable[tuple[int, str]]) -> None:
        for key in keys:
            with self._pin_lock:
                entry = self._pins.get(key)
                if entry is None:
                    continue
                entry[0] -= 1
                if entry[0] > 0 or key in self._forever:
                    continue
                del self._pins[key]
                k, field = key
                self._maps.pop(key, None)
                cached = self._srcs.get(field)
                if cached is not None:
                    cached[0][k] = b""
                    cached[1][k] = False
                stream = self._streams.get(field)
                if stream is not None:
                    stream.drop(k)
                fds = entry[1]
                for part in fds:
                    self._fd_of.pop(self.shards[k]["files"][field][part]["sha256"], None)
            for fd in fds.values():
                self.cache.unpin(fd)

    def _keys(self, shards: Iterable[int], fields: Sequence[str]) -> list[tuple[int, str]]:
        return [(int(k), f) for k in shards for f in fields]

    # -- ShardSet hooks --------------------------------------------------------------------
    def _check_sizes(self) -> None:  # files are checked (sha256) as they are downloaded
        return

    def _open(self, entry: dict[str, Any], field: str) -> int:
        fd = self._fd_of.get(entry["sha256"])
        if fd is None:  # read outside a pin (field_array): pin that shard for good
            k = self._shards_of[entry["sha256"]][0]
            with self._pin_lock:
                self._forever.add((k, field))
            self._pin([(k, field)])
            fd = self._fd_of[entry["sha256"]]
        return os.dup(fd)

    def _mmap(self, shard: int, field: str) -> tuple[np.ndarray, np.ndarray | None]:
        key = (shard, field)
        hit = self._maps.get(key)
        if hit is not None:
            return hit
        got = super()._mmap(shard, field)
        spec = self.fields[field]
        if spec.kind != "fixed" and self.shards[shard]["rows"]:
            self._check_offsets(shard, self.shards[shard], field, spec)
        return got

    def gather(
        self,
        indices: Sequence[int] | np.ndarray,
        fields: Sequence[str] | None = None,
        out: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        names = list(self.fields) if fields is None else list(fields)
        for name in names:
            self._check_field(name)
        shards = np.unique(self._locate(idx)).tolist() if idx.size else []
        keys = self._keys(shards, names)
        self._pin(keys)
        try:
            return super().gather(idx, names, out)
        finally:
            self._unpin(keys)

    def verify(self) -> None:
        """Download (through the cache) and check every file's sha256; raise naming the first bad one."""
        for k in range(self.num_shards):
            keys = self._keys([k], list(self.fields))
            self._pin(keys)
            self._unpin(keys)

    def token_stream(self, field: str = "tokens") -> TokenStream:
        """The token stream, with every shard of ``field`` pinned for the set's lifetime
        (token windows read across the whole stream): the cache must hold them all."""
        self._check_field(field)
        need = int(self.shard_bytes([field]).sum())
        limit = self.cache.limit
        if limit is not None and need > limit:
            raise ConfigError(
                f"{self.url}: token windows read the whole stream of field {field!r}, "
                f"{need} bytes, but cache_limit is {limit}; raise cache_limit to at least {need}.",
                field="cache_limit",
            )
        keys = self._keys(range(self.num_shards), [field])
        with self._pin_lock:
            self._forever.update(keys)
        self._pin(keys)
        return super().token_stream(field)

    def lazy_token_stream(self, field: str = "tokens") -> TokenStream:
        """The token stream of ``field`` with nothing pinned: each shard's tokens are mapped
        when a read needs them and dropped when the last pin of that shard ends, so the
        cache may evict them (a :class:`Loader` pins each batch's shards in its pass).

        The shards' token counts come from the manifest (``bin`` bytes / itemsize); the
        document starts are read from the small ``.idx`` files only when first asked for
        (``documents=True``), one at a time. A read outside a pin pins that shard for
        the set's lifetime, as :meth:`field_array` does.
        """
        spec = self._check_field(field)
        if spec.kind != "ragged" or spec.dtype not in ("uint16", "uint32"):
            return super().token_stream(field)  # raises, naming the field
        with self._pin_lock:
            stream = self._streams.get(field)
        if stream is not None:
            return stream
        sizes = [s["files"][field]["bin"]["bytes"] // spec.itemsize for s in self.shards]

        def load(k: int) -> np.ndarray:
            return self._mmap(k, field)[0]

        def load_offsets(k: int) -> np.ndarray:
            return self._read_offsets(k, field)

        stream = TokenStream(
            [b""] * self.num_shards,
            None,
            spec.np_dtype,
            sizes=sizes,
            load=load,
            load_offsets=load_offsets,
        )
        with self._pin_lock:
            return self._streams.setdefault(field, stream)

    def _read_offsets(self, k: int, field: str) -> np.ndarray:
        """Shard ``k``'s ``.idx`` offsets of ``field``, read through the cache into memory
        (pinned only while read) and checked as :meth:`_check_offsets` does."""
        entry = self.shards[k]["files"][field]["idx"]
        fd = self.cache.pin(entry["sha256"], entry["bytes"], self._fetcher(entry))
        try:
            raw = os.pread(fd, entry["bytes"], 0) if entry["bytes"] else b""
        finally:
            self.cache.unpin(fd)
        where = f"{self.url}/{entry['name']}"
        if len(raw) != entry["bytes"]:
            raise CorruptShardError(
                f"{where}: cached copy is {len(raw)} bytes, the manifest says {entry['bytes']}; "
                "remove it from the cache.",
                path=where,
                field=field,
            )
        idx = np.frombuffer(raw, dtype="<u8")
        bin_bytes = self.shards[k]["files"][field]["bin"]["bytes"]
        if self.shards[k]["rows"] and (
            int(idx[0]) != 0
            or int(idx[-1]) * self.fields[field].itemsize != bin_bytes
            or bool(np.any(np.diff(idx.astype(np.int64)) < 0))
        ):
            raise CorruptShardError(
                f"{where}: offsets are not a non-decreasing 0..len(bin) sequence.",
                path=where,
                field=field,
            )
        return idx

    # -- a loader's pass -------------------------------------------------------------------
    def begin_pass(
        self,
        batch_shards: BatchShards | Sequence[np.ndarray],
        fields: Sequence[str],
        *,
        prefetch_threads: int = 4,
    ) -> RemotePass:
        """Start a pass that reads shards ``batch_shards[j]`` of ``fields`` for batch ``j``
        (a :class:`BatchShards`, or one array of shard ids per batch)."""
        if not isinstance(batch_shards, BatchShards):
            batch_shards = BatchShards.from_lists(batch_shards)
        streams = [self._streams[f] for f in fields if f in self._streams]
        if (
            batch_shards.head is not None
            and streams
            and len(streams) == len(fields)
            and all(st.head_tokens for st in streams)
        ):
            kept = np.logical_and.reduce([st.heads_kept() for st in streams])
            batch_shards = batch_shards.without_kept_heads(kept)
        return RemotePass(self, batch_shards, list(fields), prefetch_threads)

    def _capture_heads(self, shards: Sequence[int], fields: Sequence[str]) -> None:
        """Keep the heads of ``shards`` (pinned by the caller) of the lazy token streams
        of ``fields``."""
        for f in fields:
            stream = self._streams.get(f)
            if stream is not None and stream.head_tokens:
                for k in shards:
                    stream.capture_head(k)


class BatchShards:
    """The shards each batch of a pass reads, as two CSR tables (no Python per batch).

    ``shards(j)``: batch ``j``'s shard ids, ascending; ``uses(k)``: the batches that
    read shard ``k``, ascending. Built with a few numpy passes over the pass's sample
    order (:meth:`of_plans`), in chunks so a large epoch never needs more than a few
    arrays of ``_CHUNK`` samples at once.

    Examples
    --------
    >>> order, offsets = np.array([0, 5, 6, 7]), np.array([0, 5, 10])
    >>> bs = BatchShards.of_plans([([(0, 2), (2, 2)], order)], offsets)
    >>> bs.shards(0).tolist(), bs.shards(1).tolist(), bs.uses(1).tolist(), len(bs)
    ([0, 1], [1], [0, 1], 2)
    """

    def __init__(
        self, ptr: np.ndarray, shard: np.ndarray, num_shards: int, head: np.ndarray | None = None
    ) -> None:
        self.ptr = ptr  # batch j's shards: shard[ptr[j] : ptr[j + 1]]
        self.shard = shard
        self.num_shards = num_shards
        #: per entry of ``shard``: only read by windows that started in an earlier shard
        #: (their first tokens, a head), never as the shard a window starts in
        self.head = head
        by_shard = np.argsort(shard, kind="stable")  # batches stay ascending per shard
        batch = np.repeat(np.arange(ptr.size - 1, dtype=np.int64), np.diff(ptr))
        self.use_batch = batch[by_shard]
        counts = np.bincount(shard, minlength=num_shards)
        self.use_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return self.ptr.size - 1

    def shards(self, j: int) -> np.ndarray:
        return self.shard[self.ptr[j] : self.ptr[j + 1]]

    def uses(self, k: int) -> np.ndarray:
        if k >= self.use_ptr.size - 1:
            return self.use_batch[:0]
        return self.use_batch[self.use_ptr[k] : self.use_ptr[k + 1]]

    def without_kept_heads(self, kept: np.ndarray) -> BatchShards:
        """These batches without the shards they read only for a head that is kept by
        then: ``kept[k]`` before the pass, or read by an earlier batch of the pass
        (whose pin captures it, :meth:`RemotePass.acquire`); a head-only read stays
        where it is the shard's first in the pass (that pin captures it)."""
        if self.head is None or not bool(self.head.any()):
            return self
        batch = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.ptr))
        first = np.full(max(self.num_shards, 1), len(self), np.int64)
        np.minimum.at(first, self.shard, batch)
        known = np.zeros(first.size, bool)
        known[: min(kept.size, first.size)] = kept[: first.size]
        drop = self.head & (known[self.shard] | (batch > first[self.shard]))
        keep = ~drop
        counts = np.bincount(batch[keep], minlength=len(self))
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return BatchShards(ptr, self.shard[keep], self.num_shards, self.head[keep])

    @classmethod
    def from_lists(cls, per_batch: Sequence[np.ndarray]) -> BatchShards:
        arrays = [np.unique(np.asarray(b, np.int64)) for b in per_batch]
        ptr = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int64)
        shard = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return cls(ptr, shard.astype(np.int64), int(shard.max()) + 1 if shard.size else 0)

    @classmethod
    def of_plans(
        cls,
        plans: Sequence[tuple[Sequence[tuple[int, int]], np.ndarray]],
        offsets: np.ndarray,
        spans: Sequence[Span | None] | None = None,
        pick: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> BatchShards:
        """The batches of each ``(plan, order)`` in turn, numbered on from one to the next
        (``plan``: ``(start, size)`` into ``order``, the pass's sample ids; ``offsets``:
        the set's shard offsets).

        ``pick`` (a mixture's source) maps a chunk of ``order``'s entries to this set's
        sample ids, ``-1`` where a position belongs to another source.

        ``spans[i]`` (default None: a sample id is a row, in the shard ``offsets`` put it
        in) maps the sample ids of plan ``i`` to the first and last shard (inclusive)
        each one reads: token windows, whose ``offsets`` are the stream's shard starts.
        A batch's shard that none of its windows starts in is marked in :attr:`head`.
        """
        num_shards = max(1, offsets.size - 1)
        ptrs, shards, heads = [np.zeros(1, np.int64)], [], []
        base = 0
        for i, (plan, order) in enumerate(plans):
            span = spans[i] if spans is not None else None
            p = np.asarray(plan, np.int64).reshape(-1, 2)
            if not p.shape[0]:
                continue
            step = max(1, _CHUNK // max(1, int(p[:, 1].max())))
            for c in range(0, p.shape[0], step):
                part = p[c : c + step]
                sizes = part[:, 1]
                firsts = np.cumsum(sizes) - sizes
                within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(firsts, sizes)
                ids = order[np.repeat(part[:, 0], sizes) + within]
                batch = np.repeat(np.arange(part.shape[0], dtype=np.int64), sizes)
                if pick is not None:
                    ids = pick(ids)
                    mine = ids >= 0
                    ids, batch = ids[mine], batch[mine]
                head = None
                if span is None:
                    k = np.searchsorted(offsets, ids, side="right") - 1
                    key = batch * num_shards + k
                else:  # each sample reads shards first..last (after the first: a head)
                    first, last = span(ids)
                    n = last - first + 1
                    batch = np.repeat(batch, n)
                    after = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
                    k = np.repeat(first, n) + after
                    key = (batch * num_shards + k) * 2 + (after > 0)
                key.sort()  # a sort and a compare: np.unique's hash path is ~10x slower here
                if span is not None:  # (batch, shard) once, not a head if any window starts there
                    head = (key & 1).astype(bool)
                    key >>= 1
                if key.size:
                    new = np.concatenate([[True], key[1:] != key[:-1]])
                    key = key[new]
                    head = None if head is None else head[new]
                heads.append(np.zeros(key.size, bool) if head is None else head)
                kb, ks = np.divmod(key, num_shards)
                ptr = np.searchsorted(kb, np.arange(1, part.shape[0] + 1), side="left")
                ptrs.append(ptr.astype(np.int64) + base)
                shards.append(ks.astype(np.int64))
                base += kb.size
        shard = np.concatenate(shards) if shards else np.zeros(0, np.int64)
        head = None
        if spans is not None and any(sp is not None for sp in spans):
            head = np.concatenate(heads) if heads else np.zeros(0, bool)
        return cls(np.concatenate(ptrs), shard, offsets.size - 1, head)


class MixturePass:
    """A mixture's remote sources in one pass: each source's :class:`RemotePass`, pinned
    for a batch in source order (every pass admits batches in order, so no two workers
    can wait on each other), released together."""

    def __init__(self, passes: dict[int, RemotePass]) -> None:
        self.passes = passes
        for p in passes.values():  # a prefetch keeps what the other sources' batches reuse
            p.siblings = [q for q in passes.values() if q is not p and q.set.cache is p.set.cache]

    def acquire(self, j: int) -> list[tuple[RemotePass, list[tuple[int, str]]]]:
        held: list[tuple[RemotePass, list[tuple[int, str]]]] = []
        try:
            for p in self.passes.values():
                held.append((p, p.acquire(j)))
        except BaseException:
            self.release(j, held)
            raise
        return held

    def release(self, j: int, held: list[tuple[RemotePass, list[tuple[int, str]]]]) -> None:
        for p, keys in held:
            p.release(j, keys)

    def close(self) -> None:
        for p in self.passes.values():
            p.close()


#: sample ids -> the first and last shard (inclusive) each reads
Span = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: samples per chunk of :meth:`BatchShards.of_plans` (bounds its temporary arrays)
_CHUNK = 1 << 20


class RemotePass:
    """One loader pass over a :class:`RemoteShardSet`: ordered pins, prefetch, next uses."""

    def __init__(
        self,
        shards: RemoteShardSet,
        batch_shards: BatchShards,
        fields: list[str],
        prefetch_threads: int,
    ) -> None:
        self.set = shards
        self.fields = fields
        self.batch_shards = batch_shards
        self._cond = threading.Condition()
        self._next = 0  # the next batch allowed to pin
        self._cursor = 0  # the lowest batch not yet released
        self._done: set[int] = set()
        self._closed = False
        self._policy = shards.cache.add_policy(self.next_use)
        self._keep_key: tuple[int, int] = (-1, -1)  # the last (cursor, batch) of _keep_until
        #: the other sources' passes of a mixture (MixturePass): their files share the cache
        self.siblings: list[RemotePass] = []
        self._keep_value = 0.0
        self._threads = max(1, prefetch_threads)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="datafuel-fetch")
        self._prefetcher = threading.Thread(
            target=self._prefetch, name="datafuel-prefetch", daemon=True
        )
        self._prefetcher.start()

    # -- policy ------------------------------------------------------------------------
    def _next_use_of_shard(self, k: int, cursor: int) -> float:
        uses = self.batch_shards.uses(k)
        i = int(np.searchsorted(uses, cursor, side="left"))
        return float(uses[i]) if i < uses.size else math.inf

    def next_use(self, sha: str) -> float:
        """The batch that next reads the file ``sha`` (inf: none in this pass)."""
        cursor = self._cursor
        best = math.inf
        for k in self.set._shards_of.get(sha, ()):
            best = min(best, self._next_use_of_shard(k, cursor))
        return best

    # -- batches -------------------------------------------------------------------------
    def acquire(self, j: int) -> list[tuple[int, str]]:
        """Pin batch ``j``'s files once every earlier batch has pinned its own."""
        with self._cond:
            while self._next != j and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                raise ConfigError("the loader pass was closed")
        shards = self.batch_shards.shards(j).tolist()
        keys = self.set._keys(shards, self.fields)
        try:
            self.set._pin(keys)
            try:
                # before batch j + 1 may pin: it counts on every head captured by now
                self.set._capture_heads(shards, self.fields)
            except BaseException:
                self.set._unpin(keys)
                raise
        finally:
            with self._cond:
                self._next = j + 1
                self._cond.notify_all()
        return keys

    def release(self, j: int, keys: list[tuple[int, str]]) -> None:
        self.set._unpin(keys)
        with self._cond:
            self._done.add(j)
            while self._cursor in self._done:
                self._done.discard(self._cursor)
                self._cursor += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        # queued downloads run to their first line, which sees the close and cancels them
        self._pool.shutdown(wait=False)
        self.set.cache.remove_policy(self._policy)

    # -- prefetch ------------------------------------------------------------------------
    def _upcoming(self) -> Iterable[tuple[int, dict[str, Any]]]:
        """``(batch, file entry)`` of the files each batch from the cursor on reads, up to
        :data:`PREFETCH_BATCHES` batches ahead of it (waiting for the loop beyond that).

        The horizon matters for the bytes, not only for memory: a prefetch that ran as far
        ahead as the limit allows would fill the cache with files needed soon-ish and
        evict the ones Belady's rule keeps for a later reuse (the next epoch's first
        shards): 1.09x the Belady bytes instead of ~1.0x (benchmarks/bench_remote.py).
        A file is offered again at each batch that reads it (a cached one costs a stat).
        """
        j = self._cursor
        while j < len(self.batch_shards) and not self._closed:
            if j < self._cursor:  # the loop got ahead of the prefetch: skip what it read
                j = self._cursor
                continue
            if j > self._cursor + PREFETCH_BATCHES:
                self._wait_for_progress()
                continue
            for k in self.batch_shards.shards(j).tolist():
                for f in self.fields:
                    for entry in self.set.shards[k]["files"][f].values():
                        yield j, entry
            j += 1

    def _prefetch(self) -> None:
        """Reserve room for the files in first-use order, one after the other (a later file
        never takes the room of an earlier one), and download them a few at a time."""
        inflight: deque[Future[None]] = deque()
        try:
            for j, entry in self._upcoming():
                self._prefetch_one(j, entry, inflight)
                if self._closed:
                    return
                while inflight and inflight[0].done():
                    inflight.popleft().result()
            while inflight:
                inflight.popleft().result()
        except Exception:
            return  # a failed prefetch is retried (and reported) by the batch that needs the file

    def _prefetch_one(self, j: int, entry: dict[str, Any], inflight: deque[Future[None]]) -> None:
        """Reserve ``entry`` (first read by batch ``j``), waiting for the loop to move on
        while there is no room, then hand its download to the pool."""
        cache = self.set.cache
        while not self._closed:
            got = cache.reserve(entry["sha256"], entry["bytes"], before=self._keep_until(j))
            if got is True:
                return
            if got is False:  # no room without evicting a file needed sooner
                if j <= self._cursor:
                    return  # needed now: the batch's own pin fetches it
                self._wait_for_progress()
                continue
            try:
                while len(inflight) >= self._threads:
                    inflight.popleft().result()
                # RuntimeError when the pass closed (its pool shut down) meanwhile
                inflight.append(self._pool.submit(self._fill, got, entry))
            except BaseException:
                self.set.cache.cancel(got)  # nobody may wait on a reservation never filled
                raise
            return

    def _keep_until(self, j: int) -> float:
        """A prefetch for batch ``j`` evicts only files next needed after this: after
        ``j``, and after the next use (from ``j`` on) of every file the batches from the
        cursor to ``j`` read.

        Evicting a file needed after ``j`` is what Belady's rule does at ``j``, but only
        when every other candidate then is needed later still; the files the batches
        from the cursor to ``j`` read become candidates at ``j`` too, with their next
        use after ``j - 1``. A prefetch that evicted a file needed sooner than those
        (as it can while they are still in use) would cost a download Belady's rule
        does not make: 1.3x the Belady bytes with token windows through a cache of
        ten shards (benchmarks/bench_remote.py). It waits instead, until the loop has
        moved past them.
        """
        cursor = self._cursor
        key = (cursor, j)
        if self._keep_key == key:
            return self._keep_value
        keep = self._keep_over(cursor, j)
        # in a mixture the other sources' files share the cache: the ones their batches
        # from the cursor to j read are candidates at j as well (without them: 1.08x the
        # Belady bytes for three sources through one cache, benchmarks/bench_remote.py)
        for other in self.siblings:
            if keep == math.inf:
                break
            keep = max(keep, other._keep_over(cursor, j))
        self._keep_key, self._keep_value = key, keep
        return keep

    def _keep_over(self, cursor: int, j: int) -> float:
        """The latest next use, from ``j`` on, of this pass's files that the batches from
        ``cursor`` to ``j`` read (at least ``j``)."""
        bs = self.batch_shards
        keep = float(j)
        if j > cursor:
            lo, hi = min(cursor, len(bs)), min(j, len(bs))
            for k in np.unique(bs.shard[bs.ptr[lo] : bs.ptr[hi]]).tolist():
                keep = max(keep, self._next_use_of_shard(k, j))
                if keep == math.inf:
                    break
        return keep

    def _fill(self, reservation: Reservation, entry: dict[str, Any]) -> None:
        """Download a reserved file, unless the pass closed meanwhile (then give the room
        and the object's lock back: a later pass must not wait on it)."""
        if self._closed:
            self.set.cache.cancel(reservation)
        else:
            self.set.cache.fill(reservation, self.set._fetcher(entry))

    def _wait_for_progress(self) -> None:
        with self._cond:
            cursor = self._cursor
            while self._cursor == cursor and not self._closed:
                self._cond.wait(0.05)
