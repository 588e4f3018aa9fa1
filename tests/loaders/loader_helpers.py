"""Shared helpers for the loader tests: shard fixtures and the resume checker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from datafuel.loaders import ShardWriter, fixed, ragged, write_shards


class Resumable(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def write_rows(directory: Path, n: int = 103, d: int = 3, shard_bytes: int = 700) -> Path:
    """Rows with an ``idx`` field equal to the global row number (several shards)."""
    rng = np.random.default_rng(0)
    write_shards(
        directory,
        fields={"idx": fixed("int64"), "x": fixed("float32", (d,))},
        shard_bytes=shard_bytes,
        idx=np.arange(n, dtype=np.int64),
        x=rng.normal(size=(n, d)).astype(np.float32),
    )
    return directory


def write_tokens(directory: Path, n_docs: int = 40, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A uint16 token corpus over several shards; returns the concatenated stream too."""
    rng = np.random.default_rng(seed)
    docs = [
        rng.integers(0, 65535, size=int(k), dtype=np.uint16)
        for k in rng.integers(5, 60, size=n_docs)
    ]
    with ShardWriter(directory, {"tokens": ragged("uint16")}, shard_bytes=600) as w:
        for s in range(0, n_docs, 7):
            w.write({"tokens": docs[s : s + 7]})
    return directory, np.concatenate(docs)


def take(source: Any, n: int) -> Iterator[Any]:
    """``n`` batches from a loader, running into further epochs as needed."""
    got = 0
    while got < n:
        progressed = False
        for batch in source:
            progressed = True
            yield batch
            got += 1
            if got == n:
                return
        if not progressed:
            raise AssertionError("the loader produced an empty epoch")


def check_resume(
    make: Callable[[], Resumable],
    batches: Callable[[Resumable, int], list[Any]],
    stops: list[int],
    total: int,
    same: Callable[[Any, Any], bool],
) -> None:
    """Stop after ``k`` batches, save (through JSON), restore into a fresh object, finish.

    The restored run must produce exactly the batches an uninterrupted run produces
    after its first ``k``: checked at every ``k`` in ``stops`` (start, middle and end of
    an epoch, and across epochs).
    """
    reference = batches(make(), total)
    assert len(reference) == total
    for k in stops:
        first = make()
        head = batches(first, k)
        state = json.loads(json.dumps(first.state_dict()))
        del first
        second = make()
        second.load_state_dict(state)
        tail = batches(second, total - k)
        resumed = head + tail
        assert len(resumed) == total, f"stop at {k}: {len(resumed)} batches, expected {total}"
        for i, (a, b) in enumerate(zip(reference, resumed, strict=True)):
            assert same(a, b), f"stop at {k}: batch {i} differs after resume"
