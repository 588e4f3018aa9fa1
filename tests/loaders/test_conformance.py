"""Loader iterates exactly as torchdata's StatefulDataLoader does (issue 20).

One scripted pattern (peek, partial pass, break, new iter, set_epoch, state_dict /
load_state_dict mid-epoch and at the epoch's end, two live iterators, zip) runs on a
``StatefulDataLoader`` over a torch ``Dataset`` of the same shard rows and on a
``Loader`` with ``shuffle=False``; the sequences of sample ids must be identical.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from loader_helpers import write_rows

from datafuel.loaders import Loader, ShardDataset

stateful = pytest.importorskip(
    "torchdata.stateful_dataloader",
    reason="torchdata is not installed (pip install torchdata; see pyproject's dev extra)",
)

BATCH = 8


@pytest.fixture(scope="module")
def rows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("conf") / "set")  # 103 rows, idx = row


def ids(batch: Any) -> list[int]:
    return [int(i) for i in batch["idx"]]


def script(make: Callable[[], Any], set_epoch: Callable[[Any, int], None], roundtrip: Any) -> list:
    """The iteration pattern; returns ``(step, ids)`` for every batch it sees."""
    log: list[tuple[str, Any]] = []

    def rec(step: str, batches: Any) -> None:
        log.append((step, [ids(b) for b in batches]))

    loader = make()
    passes(loader, set_epoch, rec, log)
    states(loader, make, set_epoch, roundtrip, rec, log)
    return log


def passes(loader: Any, set_epoch: Any, rec: Any, log: list) -> None:
    """Peek, partial pass, break, new iter, set_epoch."""
    log.append(("len", len(loader)))
    rec("peek", [next(iter(loader))])
    rec("for after a peek", loader)
    seen = []
    for i, b in enumerate(loader):
        seen.append(b)
        if i == 2:
            break
    rec("partial pass", seen)
    rec("new iter after the break", loader)
    set_epoch(loader, 1)
    rec("after set_epoch(1)", loader)


def states(loader: Any, make: Any, set_epoch: Any, roundtrip: Any, rec: Any, log: list) -> None:
    """state_dict / load_state_dict mid-epoch, at its end, with two live iterators."""
    it = iter(loader)
    rec("three of a pass", [next(it) for _ in range(3)])
    mid = roundtrip(loader.state_dict())
    del it
    fresh = make()
    fresh.load_state_dict(mid)
    set_epoch(fresh, 1)  # Lightning sets the epoch after restoring
    rec("restored mid-epoch", fresh)
    rec("the pass after that", fresh)
    loader.load_state_dict(mid)
    rec("restored into the same loader", loader)

    a, b = iter(loader), iter(loader)
    rec("two live iterators", [next(a), next(a), next(b), next(a), next(b)])
    latest = roundtrip(loader.state_dict())  # the latest iterator's place (b: 2 batches)
    del a, b
    fresh = make()
    fresh.load_state_dict(latest)
    rec("restored from two live iterators", fresh)
    log.append(("zip", [(ids(p), ids(q)) for p, q in zip(loader, loader, strict=True)]))

    at_last = None
    for i, _ in enumerate(loader):
        if i == len(loader) - 1:
            at_last = roundtrip(loader.state_dict())  # inside the loop, at the last batch
    after_loop = roundtrip(loader.state_dict())
    fresh = make()
    fresh.load_state_dict(at_last)
    rec("restored at the last batch", fresh)
    rec("and the pass after", fresh)
    fresh = make()
    fresh.load_state_dict(after_loop)
    rec("restored after the loop ended", fresh)

    untouched = make()
    before_any = roundtrip(untouched.state_dict())
    rec("iter after state_dict before any pass", untouched)
    fresh = make()
    fresh.load_state_dict(before_any)
    rec("restored from before any pass", fresh)
    fresh = make()
    fresh.load_state_dict(mid)
    assert roundtrip(fresh.state_dict()) == mid  # a loaded state reads back unchanged
    rec("restored, state_dict read, then iterated", fresh)


def sdl_set_epoch(loader: Any, epoch: int) -> None:
    loader.sampler.set_epoch(epoch)


# torchdata 0.11 calls torch.set_vital, which torch 2.13 deprecates with a UserWarning
@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_iterates_like_stateful_dataloader(
    rows_dir: Path, drop_last: bool, workers: int
) -> None:
    ds = ShardDataset(rows_dir, fields=["idx"])

    def make_reference() -> Any:
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=1, rank=0, shuffle=False)
        return stateful.StatefulDataLoader(
            ds, batch_size=BATCH, sampler=sampler, drop_last=drop_last, num_workers=0
        )

    def make_loader() -> Loader:
        return Loader(
            rows_dir, BATCH, shuffle=False, drop_last=drop_last, num_workers=workers, prefetch=2
        )

    expected = script(make_reference, sdl_set_epoch, copy.deepcopy)
    got = script(make_loader, Loader.set_epoch, lambda s: json.loads(json.dumps(s)))
    assert [step for step, _ in got] == [step for step, _ in expected]
    for (step, want), (_, have) in zip(expected, got, strict=True):
        assert have == want, f"{step}: Loader gave {have}, StatefulDataLoader {want}"
    # Lightning's way of setting the epoch (loader.sampler.set_epoch) works the same
    via_sampler = script(make_loader, sdl_set_epoch, lambda s: json.loads(json.dumps(s)))
    assert via_sampler == got
