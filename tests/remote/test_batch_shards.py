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
