"""Remote shard sets through the cache: the same batches as local, within the limit, once per node.

Every test reads a real shard set from a moto S3 server behind the fault proxy
(tests/remote/conftest.py) and compares with the same set read locally.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from loader_batches import batches, same

from datafuel.errors import ConfigError, CorruptShardError, ManifestError, WorkerError
from datafuel.loaders import Loader, ShardSet, write_shards
from datafuel.loaders._remote_set import RemoteShardSet

ROWS = 6000


@pytest.fixture
def local_set(tmp_path: Path) -> Path:
    """A table set of ~24 shards (x float32[6], y int64, id int64)."""
    rng = np.random.default_rng(7)
    d = tmp_path / "local"
    write_shards(
        d,
        x=rng.normal(size=(ROWS, 6)).astype(np.float32),
        y=rng.integers(0, 10, ROWS),
        id=np.arange(ROWS),
        shard_bytes=10_000,
    )
    return d


@pytest.fixture
def remote(s3, local_set: Path) -> str:
    s3.upload_dir(local_set, "sets/train")
    return s3.url("sets/train")


def _shard_file_bytes(d: Path) -> int:
    return max(
        sum(e["bytes"] for parts in s["files"].values() for e in parts.values())
        for s in json.loads((d / "manifest.json").read_text())["shards"]
    )


def test_remote_batches_equal_local_over_two_epochs(remote, local_set, tmp_path):
    limit = 8 * _shard_file_bytes(local_set)
    r = Loader(remote, batch_size=50, seed=3, cache_dir=tmp_path / "c", cache_limit=limit)
    assert r.sampler.shuffle == "shards" and r.sampler.window == 4  # half of the 8 shards it holds
    loc = Loader(local_set, batch_size=50, seed=3, shuffle="shards", shuffle_window=4)
    for _ in range(2):
        same(batches(r), batches(loc))
    # the order is shuffled (not storage order) and every row is read once per epoch
    ids = np.concatenate([b["id"] for b in batches(r)])
    assert sorted(ids.tolist()) == list(range(ROWS)) and not np.all(np.diff(ids) > 0)


def test_resume_and_world_size_change_continue_the_local_order(remote, local_set, tmp_path):
    kw = dict(batch_size=40, seed=1, shuffle="shards", shuffle_window=3, stall_timeout=30)
    cache = dict(cache_dir=tmp_path / "c", cache_limit=10 * _shard_file_bytes(local_set))
    first = Loader(remote, **kw, **cache)
    head = batches(first, limit=7)
    state = first.state_dict()
    # resumed on two ranks (a world-size change): the rest of the same global order
    ranks = []
    for rank in range(2):
        r = Loader(remote, **kw, **cache, rank=rank, world_size=2)
        r.load_state_dict(state)
        ranks.append(batches(r))
    loc = Loader(local_set, **kw)
    whole = np.concatenate([b["id"] for b in batches(loc)])
    got = [b["id"] for b in head]
    for a, b in zip(*ranks, strict=True):
        got += [a["id"], b["id"]]
    got_ids = np.concatenate(got)
    assert np.array_equal(got_ids, whole[: got_ids.size])
    assert whole.size - got_ids.size < 2  # what two ranks leave out of an epoch


def test_cache_never_exceeds_its_limit_while_running(remote, local_set, tmp_path, s3):
    limit = 6 * _shard_file_bytes(local_set)
    cache_dir = tmp_path / "c"
    s3.proxy.latency = 0.003
    r = Loader(remote, batch_size=64, seed=0, cache_dir=cache_dir, cache_limit=limit)
    peak = [0]
    stop = threading.Event()

    lock_fd = os.open(cache_dir / "cache.lock", os.O_RDWR | os.O_CREAT)

    def sample() -> None:
        # under the cache's lock, as reservations and evictions are: a consistent snapshot
        # (a file moving from tmp/ to objects/ meanwhile is counted at most once)
        while not stop.is_set():
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            total = 0
            for sub in ("objects", "tmp"):
                for p in (cache_dir / sub).iterdir() if (cache_dir / sub).exists() else ():
                    total += p.stat().st_size  # nothing moves while the lock is held
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            peak[0] = max(peak[0], total)
            time.sleep(0.0005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        for _ in range(2):
            batches(r)
    finally:
        stop.set()
        t.join()
        os.close(lock_fd)
    assert 0 < peak[0] <= limit
    stats = r.shards.cache.stats
    assert stats.evictions > 0  # the limit was binding
    # every download was needed: at most the files of the set, twice over (two epochs)
    assert stats.downloads <= 2 * 3 * r.shards.num_shards


def test_limit_too_small_for_one_batch_is_refused_naming_the_bytes(remote, local_set, tmp_path):
    with pytest.raises(ConfigError, match=r"needs \d+ bytes") as err:
        Loader(remote, batch_size=500, cache_dir=tmp_path, cache_limit=_shard_file_bytes(local_set))
    assert err.value.field == "cache_limit"


def test_local_set_is_never_cached(local_set, tmp_path):
    with pytest.raises(ConfigError, match="local and is read in place"):
        Loader(local_set, batch_size=8, cache_limit=1 << 20)


def test_transient_errors_and_dropped_bodies_are_retried(remote, local_set, tmp_path, s3):
    r = Loader(remote, batch_size=100, seed=5, shuffle=False, cache_dir=tmp_path / "c")
    s3.proxy.fail_next(3)  # 503 SlowDown
    s3.proxy.drop_next(2, after_bytes=100)
    got = batches(r)
    same(got, batches(Loader(local_set, batch_size=100, seed=5, shuffle=False)))
    assert r.shards.store.counters.retries >= 5


def test_corrupt_object_is_refused_naming_it(remote, local_set, tmp_path, s3):
    name = sorted(p.name for p in local_set.glob("shard-00003.x.bin"))[0]
    key = f"sets/train/{name}"
    data = bytearray((local_set / name).read_bytes())
    data[10] ^= 0xFF  # same size, other content
    s3.put(key, bytes(data))
    r = Loader(remote, batch_size=ROWS, shuffle=False, cache_dir=tmp_path / "c")
    with pytest.raises(WorkerError, match=rf"{s3.url(key)}: checksum mismatch"):
        batches(r)
    assert not any((tmp_path / "c" / "objects").iterdir().__next__ is None for _ in ())
    # nothing unverified became visible in the cache
    shas = {p.name for p in (tmp_path / "c" / "objects").iterdir()}
    manifest = json.loads((local_set / "manifest.json").read_text())
    bad = manifest["shards"][3]["files"]["x"]["bin"]["sha256"]
    assert bad not in shas
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        RemoteShardSet(remote, cache_dir=tmp_path / "c2").verify()


def test_missing_manifest_and_missing_object_are_named(s3, local_set, tmp_path):
    with pytest.raises(ManifestError, match=r"no manifest.*upload has not finished"):
        RemoteShardSet(s3.url("nothing/here"), cache_dir=tmp_path)
    s3.upload_dir(local_set, "part")
    s3.client.delete_object(Bucket=s3.bucket, Key="part/shard-00000.y.bin")
    r = RemoteShardSet(s3.url("part"), cache_dir=tmp_path)
    with pytest.raises(Exception, match=r"shard-00000\.y\.bin: no such object"):
        r.gather([0])


def test_two_processes_share_one_cache_and_fetch_each_file_once(remote, local_set, tmp_path, s3):
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from datafuel.loaders import Loader
        r = Loader({remote!r}, batch_size=64, seed=2, cache_dir={str(tmp_path / "c")!r})
        n = sum(int(b["id"].sum()) for b in r)
        print(n)
        """
    )
    s3.proxy.latency = 0.005
    s3.proxy.reset_counts()
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs == [str(ROWS * (ROWS - 1) // 2)] * 2
    gets = [path for method, path in s3.proxy.requests if method == "GET" and ".bin" in path]
    assert len(gets) == len(set(gets)) == len(list(local_set.glob("*.bin")))


def test_kill_during_downloads_then_restart_gives_the_same_batches(remote, local_set, tmp_path, s3):
    cache = tmp_path / "c"
    script = textwrap.dedent(
        f"""
        import sys
        from datafuel.loaders import Loader
        r = Loader({remote!r}, batch_size=64, seed=4, cache_dir={str(cache)!r})
        for i, b in enumerate(r):
            print(i, flush=True)
        """
    )
    s3.proxy.latency = 0.05
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    for _ in range(3):  # a few batches in: downloads (and prefetches) are in flight
        p.stdout.readline()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    verified = {f.name for f in (cache / "objects").iterdir()}
    assert verified  # some files were finished before the kill
    s3.proxy.latency = 0.0
    s3.proxy.reset_counts()
    r = Loader(remote, batch_size=64, seed=4, cache_dir=cache)
    same(
        batches(r),
        batches(
            Loader(
                local_set, batch_size=64, seed=4, shuffle="shards", shuffle_window=r.sampler.window
            )
        ),
    )
    manifest = json.loads((local_set / "manifest.json").read_text())
    name_of = {
        e["sha256"]: e["name"]
        for s in manifest["shards"]
        for parts in s["files"].values()
        for e in parts.values()
    }
    fetched = {path.rsplit("/", 1)[-1] for m, path in s3.proxy.requests if m == "GET"}
    assert not fetched & {name_of[s] for s in verified}  # verified files are not fetched again
    assert not list((cache / "tmp").iterdir())  # the dead process's partial downloads are gone


def test_credentials_never_reach_a_file(remote, local_set, tmp_path, s3):
    cache = tmp_path / "c"
    r = Loader(
        remote, batch_size=128, cache_dir=cache, cache_limit=8 * _shard_file_bytes(local_set)
    )
    batches(r)
    r.trace(tmp_path / "trace.json")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert s3.secret.encode() not in data and s3.key_id.encode() not in data, path


def test_token_windows_from_a_bucket(s3, tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 500, rng.integers(5, 60)).astype(np.uint16) for _ in range(400)]
    d = tmp_path / "tok"
    write_shards(d, tokens=docs, shard_bytes=4000)
    s3.upload_dir(d, "tok")
    r = Loader(s3.url("tok"), batch_size=8, seq_len=16, seed=1, cache_dir=tmp_path / "c")
    # a remote set's windows stream in the shard-aware order (tests/remote/test_remote_windows.py)
    same(batches(r), batches(Loader(d, batch_size=8, seq_len=16, seed=1, shuffle="shards")))
    need = ShardSet(d).nbytes
    with pytest.raises(ConfigError, match=f"at least {need}"):  # packed windows pin it all
        Loader(
            s3.url("tok"),
            batch_size=8,
            seq_len=16,
            documents="pack",
            cache_dir=tmp_path / "c2",
            cache_limit=need - 1,
        )


def test_cache_shared_by_two_sets_with_the_same_files(s3, local_set, tmp_path):
    s3.upload_dir(local_set, "a")
    s3.upload_dir(local_set, "b")
    cache = tmp_path / "c"
    RemoteShardSet(s3.url("a"), cache_dir=cache).verify()
    s3.proxy.reset_counts()
    RemoteShardSet(s3.url("b"), cache_dir=cache).verify()
    assert s3.proxy.count("GET", ".bin") == 0  # content-addressed: one copy for both
    assert len(list((cache / "objects").iterdir())) == len(
        {p.read_bytes() for p in local_set.glob("*.bin")}
    )


def test_shuffle_argument_checks(local_set):
    with pytest.raises(ConfigError, match="shuffle must be"):
        Loader(local_set, batch_size=4, shuffle="yes")
    with pytest.raises(ConfigError, match="shuffle_window is for"):
        Loader(local_set, batch_size=4, shuffle_window=3)
    with pytest.raises(ConfigError, match="packed windows have their own order"):
        write_shards(local_set.parent / "t", tokens=[np.arange(50, dtype=np.uint16)])
        Loader(local_set.parent / "t", batch_size=2, seq_len=4, documents="pack", shuffle="shards")
    _ = os


def test_a_mixture_of_remote_and_local_sources(s3, local_set, tmp_path):
    s3.upload_dir(local_set, "mix/a")
    sources = {"a": s3.url("mix/a"), "b": str(local_set)}
    kw = dict(weights={"a": 0.5, "b": 0.5}, batch_size=32, num_samples=640, seed=0)
    loader = Loader(sources, cache_dir=tmp_path / "c", **kw)
    # a remote source puts the whole mixture in shard blocks, of 16 shards without a limit
    assert loader.mixture.windows == {"a": 16, "b": 16}
    remote = batches(loader)
    local = Loader({"a": str(local_set), "b": str(local_set)}, shuffle="shards", **kw)
    assert local.mixture.windows == {"a": 16, "b": 16}
    same(remote, batches(local))
    # the full permutation (shuffle=True, every source local) is another order
    full = batches(Loader({"a": str(local_set), "b": str(local_set)}, **kw))
    assert any(not np.array_equal(x["x"], y["x"]) for x, y in zip(remote, full, strict=True))


def test_a_remote_row_mixture_prefetches_in_batch_order(s3, tmp_path):
    # two remote sources and a local one: each remote source gets its own pass over the
    # rows this epoch's batches (then the next epoch's) take from it
    from datafuel.loaders._remote_set import PREFETCH_BATCHES, MixturePass

    B = 6
    rng = np.random.default_rng(8)  # shards of 25 rows: the passes' look-ahead spans several
    local_set = tmp_path / "fine"
    n = 1200
    write_shards(
        local_set,
        x=rng.normal(size=(n, 6)).astype(np.float32),
        y=rng.integers(0, 10, n),
        id=np.arange(n),
        shard_bytes=1_000,
    )
    s3.upload_dir(local_set, "mx/a")
    s3.upload_dir(local_set, "mx/b")
    sources = {"a": s3.url("mx/a"), "b": s3.url("mx/b"), "c": str(local_set)}
    kw = dict(
        weights={"a": 0.5, "b": 0.3, "c": 0.2},
        batch_size=B,
        num_samples=600,
        seed=2,
        shuffle="shards",
        shuffle_window=1,
    )
    small = _shard_file_bytes(local_set)
    with pytest.raises(ConfigError, match=r"remote sources \['a', 'b'\].*needs \d+ bytes") as info:
        Loader(sources, cache_dir=tmp_path / "c", cache_limit=small, **kw)
    need = int(str(info.value).split("needs ")[1].split(" bytes")[0])
    limit = need + 3 * _shard_file_bytes(local_set)  # one batch's files and a little room
    assert limit < 12 * _shard_file_bytes(local_set)  # far from the whole set
    loader = Loader(sources, cache_dir=tmp_path / "c", cache_limit=limit, stall_timeout=60, **kw)
    it = iter(loader)
    assert isinstance(it._remote, MixturePass) and sorted(it._remote.passes) == [0, 1]
    s3.proxy.latency = 0.02
    first = next(it)
    # eviction knows the future: a file that a later batch reads from source a has that
    # batch as its next use (Belady's rule needs nothing else)
    a, m = loader.sources["a"], loader.mixture
    j = 10
    while not (m.samples(np.arange(B * j, B * j + B))[0] == 0).any():
        j += 1
    src, sample, _ = m.samples(np.arange(B * j, B * j + B))
    k = int(np.searchsorted(a.offsets, sample[src == 0][0], side="right") - 1)
    assert a.cache.next_use(a.shards[k]["files"]["x"]["bin"]["sha256"]) <= j
    # the loop asks for nothing more: the passes fetch beyond what the workers' batches
    # read (a and b hold the same files: one download serves both, content-addressed)
    made = 1 + loader.prefetch + loader.num_workers  # the most batches made before a wait

    def files(batches_: range) -> set[int]:
        src, sample, _ = m.samples(np.arange(B * batches_.start, B * batches_.stop))
        remote = sample[src < 2]
        return set((np.searchsorted(a.offsets, remote, side="right") - 1).tolist())

    workers_read = files(range(0, made))
    ahead = files(range(0, 1 + PREFETCH_BATCHES))  # what the passes look ahead to
    assert len(ahead) > len(workers_read)
    deadline = time.monotonic() + 20
    while s3.proxy.count("GET", ".bin") <= len(workers_read) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s3.proxy.count("GET", ".bin") > len(workers_read)
    s3.proxy.latency = 0.0
    rest = [{k: v.numpy().copy() for k, v in b.items()} for b in it]
    got = [{k: v.numpy().copy() for k, v in first.items()}, *rest]
    local = batches(Loader({"a": str(local_set), "b": str(local_set), "c": str(local_set)}, **kw))
    same(got, local)
    # the cache never held more than its limit
    held = sum(f.stat().st_size for f in (tmp_path / "c" / "objects").iterdir())
    assert held <= limit


def test_a_remote_mixture_defaults_to_shard_blocks_sized_by_its_limit(s3, local_set, tmp_path):
    # a full permutation reads about one shard per sample of every batch; a mixture with a
    # remote source serves each source in blocks of shards, as many as the limit holds
    # (half of it, split between the remote sources sharing the cache)
    for k in "abc":
        s3.upload_dir(local_set, f"blk/{k}")
    sources = {k: s3.url(f"blk/{k}") for k in "abc"}
    kw = dict(weights={"a": 0.5, "b": 0.3, "c": 0.2}, batch_size=6, num_samples=900, seed=5)
    biggest = int(RemoteShardSet(sources["a"], cache_dir=tmp_path / "c").shard_bytes(None).max())
    limit = 12 * biggest
    loader = Loader(sources, cache_dir=tmp_path / "c", cache_limit=limit, **kw)
    w = limit // biggest // (2 * 3)
    assert loader.mixture is not None and loader.mixture.windows == {k: w for k in "abc"}
    remote = batches(loader)
    local_sources = {k: str(local_set) for k in "abc"}
    local = Loader(local_sources, shuffle="shards", shuffle_window=w, **kw)
    same(remote, batches(local))
    offsets = ShardSet(local_set).offsets
    for b in remote:
        for s in range(3):
            ids = b["id"][b["source"] == s]
            assert len(set((np.searchsorted(offsets, ids, side="right") - 1).tolist())) <= 2 * w
    held = sum(f.stat().st_size for f in (tmp_path / "c" / "objects").iterdir())
    assert held <= limit

    # against the full permutation of the same sources: a source's runs of 30 samples
    # read at most 2 w shards, against nearly one shard per sample
    def shards_per_run(got: list[dict[str, np.ndarray]]) -> float:
        ids, src = (np.concatenate([b[k] for b in got]) for k in ("id", "source"))
        per = []
        for s in range(3):
            shard = np.searchsorted(offsets, ids[src == s], side="right") - 1
            per += [len(set(shard[i : i + 30].tolist())) for i in range(0, shard.size - 30, 30)]
        return float(np.mean(per))

    full = batches(Loader(local_sources, **kw))
    assert shards_per_run(remote) <= 2 * w < 3 * 2 * w < shards_per_run(full)


def test_a_mixture_prefetch_keeps_what_the_other_sources_reuse(s3, tmp_path):
    # a source's prefetch for batch j may evict only files next needed after every file
    # that the batches from the cursor to j read, the other sources' files included (they
    # share the cache): without them it fetched 1.08x the Belady bytes (bench_remote)
    rng = np.random.default_rng(4)
    for k in "ab":  # shards of 25 rows: a block of 4 is read over many batches, with gaps
        write_shards(
            tmp_path / k,
            x=rng.normal(size=(600, 6)).astype(np.float32),
            id=np.arange(600),
            shard_bytes=1_000,
        )
        s3.upload_dir(tmp_path / k, f"keep/{k}")
    sources = {k: s3.url(f"keep/{k}") for k in "ab"}
    loader = Loader(
        sources,
        8,
        weights={"a": 1, "b": 1},
        num_samples=1000,
        seed=1,
        shuffle_window=1,
        cache_dir=tmp_path / "c",
        cache_limit=30 * _shard_file_bytes(tmp_path / "a"),
    )
    it = iter(loader)
    try:
        a, b = it._remote.passes.values()
        assert a.siblings == [b] and b.siblings == [a]
        wider = checked = 0
        for _ in range(60):
            next(it)
            cursor = a._cursor
            for j in range(cursor + 1, cursor + 5):
                keep = a._keep_until(j)
                for p in (a, b):
                    bs = p.batch_shards
                    for k in np.unique(bs.shard[bs.ptr[a._cursor] : bs.ptr[j]]).tolist():
                        assert keep >= p._next_use_of_shard(k, j)
                        checked += 1
                wider += keep > a._keep_over(a._cursor, j)
        assert checked
        assert wider  # the other source's files did move the bound
    finally:
        it.close()


@pytest.mark.parametrize("documents", [False, True])
def test_a_remote_token_mixture_streams_its_shards(s3, tmp_path, documents):
    # token sources stream as a single remote token set does: each batch pins only the
    # token shards its windows read, so a limit far below the field is enough
    from datafuel.loaders._remote_set import MixturePass

    d = tmp_path / "tok"
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 60000, int(n), dtype=np.uint16) for n in rng.integers(5, 90, 240)]
    write_shards(d, tokens=docs, shard_bytes=1000)
    field = sum(f.stat().st_size for f in d.glob("*tokens*"))
    s3.upload_dir(d, "mx/tok")
    kw = dict(
        batch_size=8,
        seq_len=16,
        weights={"t": 2, "u": 1},
        documents=documents,
        seed=3,
        shuffle="shards",
        shuffle_window=3,
    )
    sources = {"t": s3.url("mx/tok"), "u": str(d)}
    with pytest.raises(ConfigError, match=r"remote sources \['t'\].*needs \d+ bytes") as info:
        Loader(sources, cache_dir=tmp_path / "c", cache_limit=2500, **kw)
    need = int(str(info.value).split("needs ")[1].split(" bytes")[0])
    limit = need + 3000  # one batch's token shards and a little room
    assert limit < field
    loader = Loader(sources, cache_dir=tmp_path / "c", cache_limit=limit, **kw)
    it = iter(loader)
    assert isinstance(it._remote, MixturePass) and list(it._remote.passes) == [0]
    remote = [{k: v.numpy().copy() for k, v in b.items()} for b in it]
    local = batches(Loader({"t": str(d), "u": str(d)}, **kw))
    same(remote, local)
    held = sum(f.stat().st_size for f in (tmp_path / "c" / "objects").iterdir())
    assert held <= limit < field
