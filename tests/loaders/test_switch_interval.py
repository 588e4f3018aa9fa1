"""The loader's worker threads get their turn beside a loop that holds the GIL.

CPython forces a GIL hand-over only after a whole switch interval without one; a loop
that frees a tensor each step re-takes the GIL for an instant, which resets that clock,
so at the default 5 ms the workers wait until the loop blocks. The prefetcher lowers
the interval while its threads run and puts it back after (see _prefetch._SwitchInterval).
"""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch
from loader_helpers import write_rows

import datafuel.loaders._prefetch as prefetch_mod
from datafuel.errors import ConfigError
from datafuel.loaders import Loader
from datafuel.loaders._prefetch import SWITCH_INTERVAL_S, Prefetcher


@pytest.fixture(autouse=True)
def _default_interval(monkeypatch):
    # a fresh count: a pass another test left open must not hold the interval here
    monkeypatch.setattr(prefetch_mod, "_switch", prefetch_mod._SwitchInterval())
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_lowered_while_running_and_put_back_after_the_last_close() -> None:
    a = Prefetcher(lambda j: j, 10, num_workers=1, depth=2, switch_interval=0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    b = Prefetcher(lambda j: j, 10, num_workers=1, depth=2, switch_interval=0.0005)
    a.close()
    assert sys.getswitchinterval() == pytest.approx(0.0005)  # b still runs
    b.close()
    assert sys.getswitchinterval() == pytest.approx(0.005)
    b.close()  # a second close gives nothing back twice
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_smaller_value_or_a_change_by_the_program_is_kept() -> None:
    sys.setswitchinterval(0.0001)
    p = Prefetcher(lambda j: j, 4, num_workers=1, depth=2, switch_interval=0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.0001)  # never raised
    p.close()
    assert sys.getswitchinterval() == pytest.approx(0.0001)
    sys.setswitchinterval(0.005)
    p = Prefetcher(lambda j: j, 4, num_workers=1, depth=2, switch_interval=0.0005)
    sys.setswitchinterval(0.002)  # the program's own choice, made meanwhile
    p.close()
    assert sys.getswitchinterval() == pytest.approx(0.002)


def test_none_and_no_threads_leave_it_alone() -> None:
    p = Prefetcher(lambda j: j, 4, num_workers=1, depth=2, switch_interval=None)
    assert sys.getswitchinterval() == pytest.approx(0.005)
    p.close()
    q = Prefetcher(lambda j: j, 4, num_workers=0, depth=2, switch_interval=0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.005)
    assert q.get(3) == (True, 3)
    q.close()


def test_closed_from_its_own_worker_it_still_gives_the_interval_back() -> None:
    holder: list[Prefetcher[int]] = []
    ready = threading.Event()

    def produce(j: int) -> int:
        ready.wait(10)
        if j == 1:
            holder[0].close()  # e.g. a finaliser run by the garbage collector in a worker
        return j

    p = Prefetcher(produce, 3, num_workers=1, depth=2, switch_interval=0.0005)
    holder.append(p)
    ready.set()
    p.get(0)
    deadline = time.monotonic() + 10
    while p.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sys.getswitchinterval() == pytest.approx(0.005)
    p.close()
    assert sys.getswitchinterval() == pytest.approx(0.005)


def _gil_step(seconds: float) -> None:
    """A training step that holds the GIL (pure Python) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_the_workers_keep_ahead_of_a_loop_that_holds_the_gil() -> None:
    # the loop takes a batch of tensors, frees the last one and runs a 2 ms GIL-holding
    # step; the worker must make batches during the steps, not only while the loop
    # waits: count the batches that were not ready when the loop asked for them
    def produce(j: int) -> torch.Tensor:
        return torch.zeros(256, 64)

    p = Prefetcher(produce, 200, num_workers=1, depth=4, switch_interval=SWITCH_INTERVAL_S)
    p.get(0)
    time.sleep(0.05)
    late = 0
    for j in range(1, 121):
        late += j not in p._results
        batch = p.get(j)  # the previous batch is freed here, as in a training loop
        _gil_step(0.002)
    del batch
    p.close()
    # at the interpreter's 5 ms the worker got no turn during the steps and every
    # batch or so was late (55 to 97 of 120 measured); with 0.5 ms, none or nearly none
    assert late <= 6, late


def test_the_loader_checks_and_passes_it_on(tmp_path) -> None:
    ds = write_rows(tmp_path / "t", 256)
    for bad in (0, -1.0, 2.0, True, "fast"):
        with pytest.raises(ConfigError, match="switch_interval"):
            Loader(ds, 16, switch_interval=bad)
    loader = Loader(ds, 16, num_workers=2)
    assert loader.switch_interval == SWITCH_INTERVAL_S
    it = iter(loader)
    next(it)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    for _ in it:
        pass  # the pass ends: its threads stop and the interval goes back
    assert sys.getswitchinterval() == pytest.approx(0.005)
    it = iter(Loader(ds, 16, num_workers=2, switch_interval=None))
    next(it)
    assert sys.getswitchinterval() == pytest.approx(0.005)
