"""``BatchShards``: the shards each batch of a remote pass reads, and each shard's batches."""

from __future__ import annotations

import numpy as np
import pytest

import datafuel.loaders._remote_set as remote_set
from datafuel.loaders._remote_set import BatchShards


def reference(plans, offsets):
    per_batch = [
        np.unique(np.searchsorted(offsets, order[a : a + b], side="right") - 1)
        for plan, order in plans
        for a, b in plan
    ]
    uses: dict[int, list[int]] = {}
    for j, b in enumerate(per_batch):
        for k in b.tolist():
            uses.setdefault(k, []).append(j)
    return per_batch, uses


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_equals_the_per_batch_definition(chunk, monkeypatch) -> None:
    monkeypatch.setattr(remote_set, "_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 60, 40))])  # empty shards too
    n = int(offsets[-1])
    order = rng.permutation(n)
    plan = [(a, min(32, n - a)) for a in range(0, n, 32)]  # a short last batch
    odd = [(5, 3), (0, 1), (n - 9, 9)]  # batches out of order, overlapping, of one sample
    plans = [(plan, order), (odd, order[::-1].copy()), ([], order)]
    bs = BatchShards.of_plans(plans, offsets)
    per_batch, uses = reference(plans, offsets)
    assert len(bs) == len(per_batch)
    for j, b in enumerate(per_batch):
        assert bs.shards(j).tolist() == b.tolist()
    for k in range(offsets.size - 1):
        assert bs.uses(k).tolist() == uses.get(k, [])
    assert bs.uses(offsets.size + 5).tolist() == []


def test_from_lists_and_empty() -> None:
    bs = BatchShards.from_lists([np.array([3, 1, 3]), np.array([], np.int64), np.array([1])])
    assert [bs.shards(j).tolist() for j in range(3)] == [[1, 3], [], [1]]
    assert (
        bs.uses(1).tolist() == [0, 2] and bs.uses(3).tolist() == [0] and bs.uses(0).tolist() == []
    )
    empty = BatchShards.of_plans([], np.array([0, 10]))
    assert len(empty) == 0 and empty.uses(0).tolist() == []


def _window_span(offsets, step, length):
    """Windows ``[step * id, step * id + length)`` over shards starting at ``offsets``."""

    def span(ids):
        s = step * ids
        first = np.searchsorted(offsets, s, side="right") - 1
        return first, np.searchsorted(offsets, s + length - 1, side="right") - 1

    return span


def test_window_heads_are_marked_and_dropped_once_kept() -> None:
    offsets = np.array([0, 10, 12, 30])
    span = _window_span(offsets, 5, 8)
    # windows [0, 8), [5, 13) then [10, 18), [15, 23)
    bs = BatchShards.of_plans([([(0, 2), (2, 2)], np.arange(4))], offsets, [span])
    assert [bs.shards(j).tolist() for j in range(2)] == [[0, 1, 2], [1, 2]]
    assert bs.head is not None and bs.head.tolist() == [False, True, True, False, False]
    # a head kept before the pass is not pinned; one first read as a head still is
    kept = bs.without_kept_heads(np.array([False, True, False]))
    assert [kept.shards(j).tolist() for j in range(2)] == [[0, 2], [1, 2]]
    assert kept.uses(1).tolist() == [1]
    # read as heads after an earlier batch pinned them: not pinned again
    late = BatchShards.of_plans([([(2, 2), (0, 2)], np.arange(4))], offsets, [span])
    dropped = late.without_kept_heads(np.zeros(3, bool))
    assert [dropped.shards(j).tolist() for j in range(2)] == [[1, 2], [0]]
    assert dropped.uses(2).tolist() == [0]
    # rows plans (no span) mark no heads
    rows = BatchShards.of_plans(
        [([(0, 2)], np.arange(4)), ([(0, 2)], np.arange(4))], offsets, [None, span]
    )
    assert rows.head is not None and rows.head.tolist() == [False, False, True, True]
    assert BatchShards.of_plans([([(0, 2)], np.arange(4))], offsets).head is None


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_kept_heads_equal_the_sequential_definition(chunk, monkeypatch) -> None:
    """Each batch pins the shards its windows start in, and a shard a window only runs
    into unless its head is kept: before the pass, or from an earlier batch's pin."""
    monkeypatch.setattr(remote_set, "_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 30, 40))])  # empty shards too
    step, length = 7, 15
    n = (int(offsets[-1]) - length) // step + 1
    order = rng.permutation(n)
    plan = [(a, min(8, n - a)) for a in range(0, n, 8)]
    span = _window_span(offsets, step, length)
    kept0 = rng.random(offsets.size - 1) < 0.3
    bs = BatchShards.of_plans([(plan, order)], offsets, [span]).without_kept_heads(kept0)
    seen = kept0.copy()
    for j, (a, b) in enumerate(plan):
        first, last = span(order[a : a + b])
        need = set(first.tolist())
        for f, e in zip(first.tolist(), last.tolist(), strict=True):
            need |= {m for m in range(f + 1, e + 1) if not seen[m]}
        assert bs.shards(j).tolist() == sorted(need), j
        seen[sorted(need)] = True
