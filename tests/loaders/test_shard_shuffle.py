"""The shard-window order (``shuffle="shards"``): a permutation, a pure function of
``(seed, epoch)``, at most ``window`` shards open at a time, the same DDP split and
resume as the full permutation, and a shard locality between a full permutation's and
storage order's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafuel.errors import ConfigError
from datafuel.loaders._sampler import (
    EpochSampler,
    epoch_order,
    max_shard_bytes_per_run,
    max_shards_per_run,
    shard_locality,
    shard_window_order,
    shard_window_run_bound,
)


def _offsets(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def _shard_of(order: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.searchsorted(offsets, order, side="right") - 1


def _brute_max_shards(order: np.ndarray, offsets: np.ndarray, run: int, weight=None) -> int:
    shard = _shard_of(order, offsets)
    weight = np.ones(len(offsets) - 1, dtype=np.int64) if weight is None else weight
    starts = range(max(1, len(order) - run + 1))
    return (
        max(int(weight[np.unique(shard[s : s + run])].sum()) for s in starts) if len(order) else 0
    )


sizes_st = st.lists(st.integers(0, 40), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    sizes=sizes_st, seed=st.integers(0, 2**40), epoch=st.integers(0, 50), window=st.integers(1, 15)
)
def test_is_a_permutation_and_keeps_the_window_property(sizes, seed, epoch, window):
    offsets = _offsets(sizes)
    order = shard_window_order(offsets, seed, epoch, window)
    n = int(offsets[-1])
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    # the guarantee: with w = min(window, shards), every row of the shard at rank i of pi
    # comes before every row of the shard at rank i + w, so at most w are open at a time
    w = min(window, max(len(sizes), 1))
    shard = _shard_of(order, offsets)
    first = np.full(len(sizes), n)
    last = np.full(len(sizes), -1)
    np.minimum.at(first, shard, np.arange(n))
    np.maximum.at(last, shard, np.arange(n))
    open_between = [((first <= p) & (last > p)).sum() for p in range(n - 1)]
    assert max(open_between, default=0) <= w
    # ... and the run bound, checked against a brute-force count for a few run lengths
    for run in (1, 3, 16, 50):
        got = max_shards_per_run(order, offsets, run)
        assert got == _brute_max_shards(order, offsets, run)
        assert got <= shard_window_run_bound(offsets, window, run)


def test_rank_order_of_shards_is_exactly_banded():
    """Rows of the shard at rank i all precede those of rank i + w (pi read back)."""
    offsets = _offsets([30] * 20)
    for window in (1, 2, 5):
        order = shard_window_order(offsets, 7, 3, window)
        shard = _shard_of(order, offsets)
        pi = np.random.default_rng([7, 3, 0x5A12]).permutation(20)
        rank = np.empty(20, dtype=np.int64)
        rank[pi] = np.arange(20)
        r = rank[shard]
        # the running max of ranks seen so far never gets w ahead of any later row's rank
        assert (np.maximum.accumulate(r)[:-1] - r[1:] < window).all()
        if window == 1:
            assert (np.diff(r) >= 0).all()  # one shard after another, each shuffled
            assert not (np.diff(order) == 1).all()


def test_pure_function_of_seed_and_epoch():
    offsets = _offsets([100, 0, 57, 300, 1, 80])
    a = shard_window_order(offsets, 11, 2, 3)
    np.testing.assert_array_equal(a, shard_window_order(offsets.copy(), 11, 2, 3))
    assert not np.array_equal(a, shard_window_order(offsets, 11, 3, 3))
    assert not np.array_equal(a, shard_window_order(offsets, 12, 2, 3))
    assert not np.array_equal(a, shard_window_order(offsets, 11, 2, 4))
    # a seed past 32 bits is masked like the full permutation's
    np.testing.assert_array_equal(a, shard_window_order(offsets, 11 + 2**32, 2, 3))
    # a window past the number of shards acts as the number of shards
    np.testing.assert_array_equal(
        shard_window_order(offsets, 1, 0, 6), shard_window_order(offsets, 1, 0, 100)
    )


def test_golden_small_order():
    """The documented generator calls, replayed by hand, give the same order."""
    offsets = _offsets([3, 0, 4, 2])
    rng = np.random.default_rng([5, 1, 0x5A12])
    pi = rng.permutation(4)
    rows = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in pi])
    rank = np.concatenate([[i] * (offsets[s + 1] - offsets[s]) for i, s in enumerate(pi)])
    r = rng.integers(0, 2 * 2**32, size=9, dtype=np.int64)
    want = rows[np.argsort(rank.astype(np.int64) * 2**32 + r, kind="stable")]
    np.testing.assert_array_equal(shard_window_order(offsets, 5, 1, 2), want)


def test_empty_and_degenerate_sets():
    assert shard_window_order(np.array([0]), 0, 0, 4).size == 0
    assert shard_window_order(np.array([0, 0, 0]), 0, 0, 1).size == 0
    assert shard_window_run_bound(np.array([0, 0]), 3, 8) == 0
    assert max_shards_per_run(np.array([], dtype=np.int64), np.array([0]), 4) == 0
    with pytest.raises(ConfigError, match="window"):
        shard_window_order(np.array([0, 5]), 0, 0, 0)
    with pytest.raises(ConfigError, match="offsets"):
        shard_window_order(np.array([0, 5, 3]), 0, 0, 1)


def test_run_helpers_on_a_known_order():
    offsets = _offsets([2, 2, 2])
    order = np.array([0, 2, 1, 4, 3, 5])  # shards 0 1 0 2 1 2
    assert max_shards_per_run(order, offsets, 1) == 1
    assert max_shards_per_run(order, offsets, 2) == 2
    assert max_shards_per_run(order, offsets, 3) == 3
    assert max_shards_per_run(order, offsets, 100) == 3  # a run longer than the epoch
    nbytes = np.array([10, 1, 100])
    assert max_shard_bytes_per_run(order, offsets, 2, nbytes) == 110  # shards 0, 2
    assert max_shard_bytes_per_run(order, offsets, 3, nbytes) == 111
    with pytest.raises(ConfigError, match="shard_bytes"):
        max_shard_bytes_per_run(order, offsets, 2, np.array([1, 2]))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=8), run=st.integers(1, 40))
def test_byte_helper_matches_brute_force(sizes, run):
    offsets = _offsets(sizes)
    order = shard_window_order(offsets, 3, 0, 2)
    nbytes = np.arange(1, len(sizes) + 1, dtype=np.int64) * 1000
    assert max_shard_bytes_per_run(order, offsets, run, nbytes) == _brute_max_shards(
        order, offsets, run, nbytes
    )


# -- through EpochSampler ------------------------------------------------------------------
SIZES = [37, 0, 120, 64, 5, 90, 0, 77, 33, 150]
OFFSETS = _offsets(SIZES)
N = int(OFFSETS[-1])


def _sampler(world_size=1, rank=0, batch_size=8, window=3, **kw):
    return EpochSampler(
        N,
        batch_size,
        shuffle="shards",
        seed=42,
        rank=rank,
        world_size=world_size,
        offsets=OFFSETS,
        window=window,
        **kw,
    )


def test_sampler_order_is_the_shard_window_order():
    s = _sampler()
    np.testing.assert_array_equal(s.order(), shard_window_order(OFFSETS, 42, 0, 3))
    np.testing.assert_array_equal(s.order(2), shard_window_order(OFFSETS, 42, 2, 3))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_disjoint_with_equal_batch_counts(world_size, drop_last):
    samplers = [_sampler(world_size, r, drop_last=drop_last) for r in range(world_size)]
    per_rank = [list(s.batches()) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1
    assert all(len(b) == samplers[0].num_batches() for b in per_rank)
    seen = np.concatenate([np.concatenate(b) for b in per_rank])
    assert len(np.unique(seen)) == len(seen)
    # global step j, rank r: the r-th run of the step, exactly as for the full permutation
    order = samplers[0].order()
    for j in range(len(per_rank[0])):
        step = np.concatenate([per_rank[r][j] for r in range(world_size)])
        b = len(per_rank[0][j])
        start = j * world_size * samplers[0].batch_size
        np.testing.assert_array_equal(step, order[start : start + world_size * b])


def _consume(samplers, steps):
    """Run ``steps`` global steps (or to the epoch's end); the samples in global order."""
    out = []
    batches = [iter(list(s.batches())) for s in samplers]
    for _ in range(steps):
        got = [next(it, None) for it in batches]
        if got[0] is None:
            break
        out.extend(got)
        for s in samplers:
            s.advance(len(got[0]))
    return out


@pytest.mark.parametrize(("before", "after"), [(1, 3), (4, 2), (3, 4), (2, 1)])
def test_resume_under_another_world_size_continues_the_global_order(before, after):
    reference = np.concatenate(list(_sampler().batches()))  # one rank, one epoch
    first = [_sampler(before, r) for r in range(before)]
    taken = _consume(first, 5)
    state = json.loads(json.dumps(first[0].state_dict()))
    assert state["shuffle"] == "shards" and state["window"] == 3
    second = [_sampler(after, r, batch_size=5) for r in range(after)]
    for s in second:
        s.load_state_dict(state)
    taken += _consume(second, 10**6)
    got = np.concatenate(taken)
    # everything up to the resumed run's own last step (it drops < world_size samples)
    n = state["position"] + second[0]._usable(state["position"])
    assert N - after < n <= N
    np.testing.assert_array_equal(got, reference[: len(got)])
    assert len(got) == n
    assert second[0].epoch == 1 and second[0].position == 0


def test_state_refuses_another_window_or_mode():
    state = _sampler(window=3).state_dict()
    with pytest.raises(ConfigError, match="window=3.*window=4"):
        _sampler(window=4).load_state_dict(state)
    full = EpochSampler(N, 8, shuffle=True, seed=42)
    with pytest.raises(ConfigError, match="shuffle"):
        full.load_state_dict(state)
    with pytest.raises(ConfigError, match="shuffle"):
        _sampler().load_state_dict(full.state_dict())
    with pytest.raises(ConfigError, match="window"):
        _sampler().load_state_dict({k: v for k, v in state.items() if k != "window"})
    _sampler(batch_size=3).load_state_dict(state)  # same window and mode: fine


def test_full_permutation_state_unchanged():
    s = EpochSampler(N, 8, shuffle=True, seed=42)
    assert "window" not in s.state_dict() and s.state_dict()["shuffle"] is True
    np.testing.assert_array_equal(s.order(), epoch_order(N, 42, 0, True))
    assert EpochSampler(N, 8, shuffle=False).state_dict()["shuffle"] is False


def test_sampler_config_errors():
    with pytest.raises(ConfigError, match="offsets"):
        EpochSampler(N, 8, shuffle="shards", window=2)
    with pytest.raises(ConfigError, match="window"):
        EpochSampler(N, 8, shuffle="shards", offsets=OFFSETS)
    with pytest.raises(ConfigError, match="window"):
        EpochSampler(N, 8, shuffle="shards", offsets=OFFSETS, window=0)
    with pytest.raises(ConfigError, match="shuffle"):
        EpochSampler(N, 8, shuffle="windows")
    with pytest.raises(ConfigError, match="num_samples"):
        EpochSampler(N + 1, 8, shuffle="shards", offsets=OFFSETS, window=2)


# -- quality ---------------------------------------------------------------------------
def test_locality_between_full_permutation_and_storage_order():
    offsets = _offsets([1000] * 64)
    n, b = 64_000, 256
    assert shard_locality(np.arange(n), offsets, b) == 1.0
    full = [shard_locality(epoch_order(n, s, 0, True), offsets, b) for s in range(3)]
    assert all(abs(q) < 0.01 for q in full)
    q = {w: shard_locality(shard_window_order(offsets, 0, 0, w), offsets, b) for w in (1, 2, 4, 16)}
    # window 1 reads one shard at a time: as clustered as storage order
    assert q[1] == pytest.approx(1.0, abs=0.01)
    assert 1.0 > q[2] > q[4] > q[16] > 0.02
    # about 1 / window: a batch of a window of w shards, each about equally represented
    for w in (2, 4, 16):
        assert q[w] == pytest.approx(1 / w, rel=0.35)


def test_locality_degenerate_cases():
    assert shard_locality(np.arange(10), _offsets([10]), 4) == 0.0  # one shard
    assert shard_locality(np.arange(10), _offsets([5, 5]), 1) == 0.0  # batches of one


# -- token windows (a remote set's default order; also local with shuffle="shards") --------
def _brute_span_bytes(first, last, run, nbytes) -> int:
    n = len(first)
    return max(
        int(
            nbytes[
                sorted({k for p in range(s, min(n, s + run)) for k in range(first[p], last[p] + 1)})
            ].sum()
        )
        for s in range(max(1, n - run + 1))
    )


@settings(max_examples=40, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2)), min_size=1, max_size=30),
    run=st.integers(1, 12),
)
def test_span_byte_helper_matches_brute_force(spans, run):
    from datafuel.loaders._sampler import _max_span_bytes_per_run

    first = np.array([a for a, _ in spans], np.int64)
    last = first + np.array([b for _, b in spans], np.int64)
    nbytes = np.arange(1, 10, dtype=np.int64) * 1000
    got = _max_span_bytes_per_run(first, last, run, nbytes)
    assert got == _brute_span_bytes(first.tolist(), last.tolist(), run, nbytes)


def _token_set(tmp_path):
    from datafuel.loaders import ShardWriter, ragged

    rng = np.random.default_rng(3)
    docs = [rng.integers(0, 60_000, int(n), dtype=np.uint16) for n in rng.integers(1, 120, 300)]
    with ShardWriter(tmp_path / "t", {"tokens": ragged("uint16")}, shard_bytes=2_000) as w:
        w.write({"tokens": docs})
    return tmp_path / "t", np.concatenate(docs)


@pytest.mark.parametrize("seed", [0, 7])
def test_local_token_windows_in_shard_order(tmp_path, seed):
    from datafuel.loaders import Loader, ShardSet

    d, flat = _token_set(tmp_path)
    T = 32
    loader = Loader(d, 8, seq_len=T, seed=seed, shuffle="shards", shuffle_window=2, num_workers=0)
    w, s = loader.windows, loader.sampler
    starts = ShardSet(d).token_stream().shard_starts
    for epoch in range(3):
        o = w.offset(seed, epoch, True)
        grid = o + T * np.arange(len(w))
        shard = np.searchsorted(starts, grid, side="right") - 1
        offsets = np.concatenate(
            [np.searchsorted(shard, np.arange(starts.size - 1), side="left"), [len(w)]]
        )
        np.testing.assert_array_equal(w.shard_offsets(o), offsets)
        np.testing.assert_array_equal(s.order(epoch), shard_window_order(offsets, seed, epoch, 2))
    batches = [b["tokens"].numpy() for b in loader]
    order, grid = s.order(0), w.starts(seed, 0, True)
    want = np.stack([flat[g : g + T + 1] for g in grid[order]])
    np.testing.assert_array_equal(np.concatenate(batches), want)
    state = loader.state_dict()
    assert state["shuffle"] == "shards" and state["window"] == 2 and state["epoch"] == 1


def test_local_token_windows_default_order_unchanged(tmp_path):
    from datafuel.loaders import Loader

    d, flat = _token_set(tmp_path)
    loader = Loader(d, 8, seq_len=32, seed=5, num_workers=0)
    assert loader.sampler.shuffle is True and "window" not in loader.state_dict()
    got = np.concatenate([b["tokens"].numpy() for b in loader])
    grid = loader.windows.starts(5, 0, True)
    order = epoch_order(len(loader.windows), 5, 0, True)
    np.testing.assert_array_equal(got, np.stack([flat[g : g + 33] for g in grid[order]]))
    with pytest.raises(ConfigError, match="packed windows have their own order"):
        Loader(d, 8, seq_len=32, documents="pack", shuffle="shards")
