"""Token windows from a bucket through a cache smaller than the token field.

A remote token set streams: each batch pins the shards its windows read (a window's
tokens ``[s, s + T]`` may run into the next shards), the pass prefetches them in order
and evicts by next use, and the windows come in the shard-aware order (FORMAT.md,
"Sampling"). Every test reads a real set from a moto S3 server behind the fault proxy
(tests/remote/conftest.py) and compares with the same set read locally.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from loader_batches import batches, same

from datafuel.errors import ConfigError
from datafuel.loaders import Loader, ShardWriter, ragged
from datafuel.loaders._remote_set import RemoteShardSet

T = 48  # seq_len
WINDOW = 2  # shuffle_window


@pytest.fixture
def docs() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 60_000, int(n), dtype=np.uint16) for n in rng.integers(1, 160, 700)]


@pytest.fixture
def local_set(tmp_path: Path, docs: list[np.ndarray]) -> Path:
    """~25 shards of one uint16 token field (~1,600 tokens a shard)."""
    d = tmp_path / "local"
    with ShardWriter(d, {"tokens": ragged("uint16")}, shard_bytes=3_000) as w:
        w.write({"tokens": docs})
    return d


@pytest.fixture
def remote(s3, local_set: Path) -> str:
    s3.upload_dir(local_set, "tok/train")
    return s3.url("tok/train")


def _field_bytes(d: Path) -> tuple[int, int]:
    """Bytes of the token field, and of its biggest shard (``.bin`` and ``.idx``)."""
    shards = json.loads((d / "manifest.json").read_text())["shards"]
    sizes = [sum(e["bytes"] for e in s["files"]["tokens"].values()) for s in shards]
    return sum(sizes), max(sizes)


def _expected(loader: Loader, flat: np.ndarray, epoch: int) -> list[np.ndarray]:
    """The windows of ``epoch`` built from the loader's own order and the flat stream."""
    s = loader.sampler
    grid = loader.windows.starts(s.seed, epoch, True)  # type: ignore[union-attr]
    order = s.order(epoch)
    return [
        np.stack([flat[st : st + T + 1] for st in grid[order[off : off + b]]]).astype(np.int64)
        for off, b in s.plan(0)
    ]


class _Peak:
    """The cache's bytes on disk, sampled under its lock while a loop runs."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir, self.peak, self._stop = cache_dir, 0, threading.Event()
        self._t = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "cache.lock", os.O_RDWR | os.O_CREAT)
        try:
            while not self._stop.is_set():
                fcntl.flock(fd, fcntl.LOCK_EX)
                total = 0
                for sub in ("objects", "tmp"):
                    for p in (self.dir / sub).iterdir() if (self.dir / sub).exists() else ():
                        total += p.stat().st_size
                fcntl.flock(fd, fcntl.LOCK_UN)
                self.peak = max(self.peak, total)
                time.sleep(0.0005)
        finally:
            os.close(fd)

    def __enter__(self) -> _Peak:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def test_windows_through_a_third_of_the_field_equal_local(remote, local_set, docs, tmp_path, s3):
    total, biggest = _field_bytes(local_set)
    limit = total // 3
    cache_dir = tmp_path / "c"
    s3.proxy.latency = 0.002
    kw = dict(batch_size=16, seq_len=T, seed=4, shuffle_window=WINDOW)
    r = Loader(remote, **kw, cache_dir=cache_dir, cache_limit=limit)
    assert r.sampler.shuffle == "shards" and r.windows.stream.lazy  # type: ignore[union-attr]
    assert limit < total and limit >= 6 * biggest
    loc = Loader(local_set, **kw, shuffle="shards")
    flat = np.concatenate(docs)
    names = sorted(p.name for p in local_set.glob("shard-*.tokens.*"))
    s3.proxy.reset_counts()
    with _Peak(cache_dir) as peak:
        for epoch in range(2):
            got = batches(r)
            same(got, batches(loc))
            want = _expected(r, flat, epoch)
            assert len(got) == len(want) == len(r)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a["tokens"], b)
            used = r.shards.cache.used_bytes()  # type: ignore[union-attr]
            assert used <= limit
    assert 0 < peak.peak <= limit
    # the limit was binding, yet a file came down at most twice an epoch and about once
    # on average: a window running into the next shard reads that shard's head, kept
    # since its first pin, instead of the whole shard at the turn of the one before it
    # (without heads: 187 GETs of these 76 files, up to 4 of one)
    assert r.shards.cache.stats.evictions > 0  # type: ignore[union-attr]
    gets = {n: s3.proxy.count("GET", contains=n) for n in names}
    assert max(gets.values()) <= 2 * 2, gets
    assert sum(gets.values()) <= 2 * len(names), gets
    # each epoch is every window of its grid once, in a shuffled order
    s = r.sampler
    order = s.order(1)
    assert sorted(order.tolist()) == list(range(len(r.windows))) and not np.all(np.diff(order) > 0)


def test_local_shards_order_equals_its_documented_definition(local_set):
    from datafuel.loaders import ShardSet
    from datafuel.loaders._sampler import shard_window_order

    loc = Loader(local_set, batch_size=16, seq_len=T, seed=4, shuffle="shards", shuffle_window=3)
    w = loc.windows
    ts = ShardSet(local_set).token_stream()
    for epoch in range(3):
        o = w.offset(4, epoch, True)  # type: ignore[union-attr]
        grid = o + T * np.arange(len(w))  # type: ignore[arg-type]
        shard = np.searchsorted(ts.shard_starts, grid, side="right") - 1
        offsets = np.searchsorted(shard, np.arange(ts.shard_starts.size - 1), side="left")
        offsets = np.concatenate([offsets, [len(w)]])  # type: ignore[arg-type]
        want = shard_window_order(offsets, 4, epoch, 3)
        np.testing.assert_array_equal(loc.sampler.order(epoch), want)


def test_resume_mid_epoch_continues_the_same_windows(remote, local_set, tmp_path):
    total, _ = _field_bytes(local_set)
    kw = dict(batch_size=12, seq_len=T, seed=9, shuffle_window=WINDOW, stall_timeout=30)
    cache = dict(cache_dir=tmp_path / "c", cache_limit=total // 3)
    whole = batches(Loader(remote, **kw, **cache))
    first = Loader(remote, **kw, **cache)
    head = batches(first, limit=7)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["shuffle"] == "shards" and state["window"] == WINDOW
    again = Loader(remote, **kw, **cache)
    again.load_state_dict(state)
    same(head + batches(again), whole)
    # and the next epoch follows
    same(batches(again), _next_epoch(local_set, kw))


def _next_epoch(local_set: Path, kw: dict[str, object]) -> list[dict[str, np.ndarray]]:
    loc = Loader(local_set, **kw, shuffle="shards")
    loc.set_epoch(1)
    return batches(loc)


def test_two_ranks_get_disjoint_equal_windows(remote, local_set, tmp_path):
    total, _ = _field_bytes(local_set)
    kw = dict(batch_size=10, seq_len=T, seed=2, shuffle_window=WINDOW)
    cache = dict(cache_dir=tmp_path / "c", cache_limit=total // 3)
    ranks, starts = [], []
    for rank in range(2):
        r = Loader(remote, **kw, **cache, rank=rank, world_size=2)
        got = batches(r)
        same(got, batches(Loader(local_set, **kw, shuffle="shards", rank=rank, world_size=2)))
        ranks.append(got)
        s = r.sampler
        grid = r.windows.starts(s.seed, 0, True)  # type: ignore[union-attr]
        order = s.order(0)
        starts.append(np.concatenate([grid[order[o : o + b]] for o, b in s.plan(0)]))
    assert len(ranks[0]) == len(ranks[1])
    assert [b["tokens"].shape for b in ranks[0]] == [b["tokens"].shape for b in ranks[1]]
    assert starts[0].size == starts[1].size
    assert not set(starts[0].tolist()) & set(starts[1].tolist())
    n = len(r.windows)  # type: ignore[arg-type]
    assert starts[0].size + starts[1].size == 2 * (n // 2)


def test_limit_too_small_for_one_batch_is_refused_naming_the_bytes(remote, local_set, tmp_path):
    _, biggest = _field_bytes(local_set)
    with pytest.raises(ConfigError, match=r"token shards.*needs \d+ bytes") as err:
        Loader(remote, batch_size=64, seq_len=T, cache_dir=tmp_path, cache_limit=2 * biggest)
    assert err.value.field == "cache_limit"
    assert "Raise cache_limit to at least" in str(err.value)


def test_document_fields_equal_local(remote, local_set, tmp_path):
    total, _ = _field_bytes(local_set)
    kw = dict(batch_size=8, seq_len=T, seed=5, shuffle_window=WINDOW, documents=True)
    r = Loader(remote, **kw, cache_dir=tmp_path / "c", cache_limit=total // 3)
    got = batches(r)
    same(got, batches(Loader(local_set, **kw, shuffle="shards")))
    assert {"position_ids", "cu_seqlens", "max_seqlen", "loss_mask"} <= got[0].keys()
    # the document starts came from the .idx files alone, not every .bin
    here = Loader(local_set, **kw, shuffle="shards")
    assert r.windows.max_segments == here.windows.max_segments  # type: ignore[union-attr]


def test_lazy_stream_maps_only_pinned_shards_and_drops_them(remote, local_set, tmp_path):
    from datafuel.loaders import ShardSet

    rs = RemoteShardSet(remote, cache_dir=tmp_path / "c")
    ts = rs.lazy_token_stream("tokens")
    local = ShardSet(local_set).token_stream("tokens")
    np.testing.assert_array_equal(ts.shard_starts, local.shard_starts)
    assert all(isinstance(d, bytes) for d in ts._data)  # nothing mapped yet
    k = 3
    s = int(ts.shard_starts[k + 1]) - 5  # runs into shard k + 1
    keys = rs._keys([k, k + 1], ["tokens"])
    rs._pin(keys)
    try:
        np.testing.assert_array_equal(ts.windows([s], 20), local.windows([s], 20))
        assert not isinstance(ts._data[k], bytes) and not isinstance(ts._data[k + 1], bytes)
        assert sum(not isinstance(d, bytes) for d in ts._data) == 2
    finally:
        rs._unpin(keys)
    assert isinstance(ts._data[k], bytes) and isinstance(ts._data[k + 1], bytes)
    assert not rs._pins
    np.testing.assert_array_equal(ts.doc_starts, local.doc_starts)
    rs.close()


def test_a_window_into_the_next_shard_reads_its_kept_head(remote, local_set, tmp_path):
    from datafuel.loaders import ShardSet
    from datafuel.loaders._windows import TokenWindows

    rs = RemoteShardSet(remote, cache_dir=tmp_path / "c")
    ts = rs.lazy_token_stream("tokens")
    w = TokenWindows(ts, T)
    local = ShardSet(local_set).token_stream("tokens")
    assert ts.head_tokens == T and not ts.heads_kept().any()
    k = 3
    nxt = rs._keys([k + 1], ["tokens"])
    rs._pin(nxt)
    rs._capture_heads([k + 1], ["tokens"])  # what a pass's pin of shard k + 1 does
    rs._unpin(nxt)
    assert ts.heads[k + 1].size == T and isinstance(ts._data[k + 1], bytes)
    assert ts.heads_kept().tolist() == [m == k + 1 for m in range(rs.num_shards)]
    end = int(ts.shard_starts[k + 1])
    # runs into shard k + 1, reaches its last token T - 1, inside shard k, ends just before it
    starts = np.array([end - 5, end - 1, int(ts.shard_starts[k]) + 3, end - T - 1])
    own = rs._keys([k], ["tokens"])
    rs._pin(own)
    try:
        for out in (None, np.empty((starts.size, T + 1), np.int64)):
            np.testing.assert_array_equal(w.read(starts, out=out), local.windows(starts, T + 1))
        assert isinstance(ts._data[k + 1], bytes)  # never mapped (nor pinned) for it
        assert set(rs._pins) == set(own) and not rs._forever
    finally:
        rs._unpin(own)
    rs.close()


def test_batch_shards_count_the_shards_a_window_runs_into():
    from datafuel.loaders._remote_set import BatchShards

    offsets = np.array([0, 10, 12, 30])  # token starts of three shards
    order = np.array([0, 1, 2, 3])  # window ids, starts 5 * id, 8 tokens each

    def span(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = 5 * ids
        first = np.searchsorted(offsets, s, side="right") - 1
        return first, np.searchsorted(offsets, s + 7, side="right") - 1

    bs = BatchShards.of_plans([([(0, 2), (2, 2)], order)], offsets, [span])
    # windows [0, 8), [5, 13) then [10, 18), [15, 23)
    assert [bs.shards(j).tolist() for j in range(len(bs))] == [[0, 1, 2], [1, 2]]
    assert bs.uses(2).tolist() == [0, 1] and bs.uses(0).tolist() == [0]


def test_default_window_fits_the_limit(remote, local_set, tmp_path):
    total, _ = _field_bytes(local_set)
    r = Loader(remote, batch_size=16, seq_len=T, cache_dir=tmp_path / "c", cache_limit=total // 3)
    assert r.sampler.shuffle == "shards" and r.sampler.window >= 1
    assert len(batches(r, limit=3)) == 3
