"""The loader's waits are bounded and diagnosable: a stuck transform, a stuck close."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from loader_helpers import write_rows

from datafuel.errors import ConfigError, WorkerError
from datafuel.loaders import BatchInfo, Loader
from datafuel.loaders import _prefetch as prefetch_module

STALL_S = 0.5


class StuckOnBatch:
    """Blocks forever (until ``release``) on batch ``stuck_at``; passes the others through."""

    output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ())}

    def __init__(self, stuck_at: int) -> None:
        self.stuck_at = stuck_at
        self.release = threading.Event()

    def __call__(self, batch: Mapping[str, Any], info: BatchInfo) -> dict[str, Any]:
        if info.batch_index == self.stuck_at:
            self.wait_forever_on_batch()
        return {"idx": np.asarray(batch["idx"])}

    def wait_forever_on_batch(self) -> None:
        self.release.wait()


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("datafuel-loader")]


def wait_until_no_loader_thread(limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while loader_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loader_threads(), loader_threads()


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "rows", n=40)


@pytest.fixture
def stuck() -> Iterator[StuckOnBatch]:
    t = StuckOnBatch(stuck_at=2)
    yield t
    t.release.set()  # whatever the test did, never leave a thread blocked behind it
    wait_until_no_loader_thread()


def test_a_stuck_transform_raises_naming_the_batch_and_dumps_the_stacks(
    rows: Path, stuck: StuckOnBatch, capfd: pytest.CaptureFixture[str]
) -> None:
    loader = Loader(
        rows, 4, shuffle=False, num_workers=2, prefetch=2, transform=stuck, stall_timeout=STALL_S
    )
    got = []
    it = iter(loader)
    got.append(next(it)["idx"].tolist())
    got.append(next(it)["idx"].tolist())
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="loader stalled: batch 2 of epoch 0") as info:
        next(it)
    waited = time.monotonic() - t0
    assert STALL_S <= waited < STALL_S + 2.0  # within the stall time (and the dump)
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]
    err = info.value
    assert err.indices == [8, 9, 10, 11]
    assert err.waited >= STALL_S and err.batch_index == 2
    assert "sample indices [8, 9, 10, 11]" in str(err)
    assert "wait_forever_on_batch" in str(err)  # the message names where the worker is stuck
    dump = capfd.readouterr().err
    assert "Thread 0x" in dump and "in wait_forever_on_batch" in dump  # faulthandler's format
    # the iteration is closed already; releasing the stuck job lets its thread end
    stuck.release.set()
    wait_until_no_loader_thread()
    loader.close()


def test_closing_over_a_stuck_worker_warns_instead_of_hanging(
    rows: Path, stuck: StuckOnBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch_module, "_JOIN_TIMEOUT_S", 0.3)
    loader = Loader(rows, 4, shuffle=False, num_workers=2, prefetch=4, transform=stuck)
    match = r"did not stop within 0.3 s.*wait_forever_on_batch"
    with pytest.warns(RuntimeWarning, match=match):
        for _batch in loader:
            time.sleep(0.05)  # the workers reach batch 2 and one blocks there
            t0 = time.monotonic()
            break  # dropping the iterator closes it
    assert time.monotonic() - t0 < 2.0
    loader.close()  # nothing left to close: no second warning
    assert len(loader_threads()) == 1  # only the stuck one, still inside its job
    stuck.release.set()
    wait_until_no_loader_thread()


def test_a_break_and_del_leave_no_thread(rows: Path) -> None:
    loader = Loader(rows, 4, num_workers=3, prefetch=2, stall_timeout=5)
    for i, _batch in enumerate(loader):
        if i == 3:
            break
    del loader
    wait_until_no_loader_thread(limit_s=2.0)


def test_stall_timeout_none_waits_as_long_as_it_takes(rows: Path) -> None:
    class Slow:
        output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ())}

        def __call__(self, batch: Mapping[str, Any], info: BatchInfo) -> dict[str, Any]:
            time.sleep(0.3)
            return {"idx": np.asarray(batch["idx"])}

    loader = Loader(rows, 20, shuffle=False, transform=Slow(), stall_timeout=None)
    assert [len(b["idx"]) for b in loader] == [20, 20]
    slow = Loader(rows, 20, shuffle=False, transform=Slow(), stall_timeout=0.1)
    with pytest.raises(WorkerError, match="stall_timeout=0.1"):
        list(slow)
    wait_until_no_loader_thread()


@pytest.mark.parametrize("value", [0, -1.0, "10", True, float("nan")])
def test_stall_timeout_is_checked(rows: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match="stall_timeout must be a positive number"):
        Loader(rows, 4, stall_timeout=value)


def test_a_worker_that_raises_system_exit_does_not_hang_the_loop(rows: Path) -> None:
    class Exits:
        output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ())}

        def __call__(self, batch: Mapping[str, Any], info: BatchInfo) -> dict[str, Any]:
            raise SystemExit(3)

    with pytest.raises(WorkerError, match="SystemExit"):
        list(Loader(rows, 4, transform=Exits(), stall_timeout=5))
    wait_until_no_loader_thread()


def test_an_iterator_alive_at_exit_is_stopped_cleanly(rows: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from datafuel.loaders import Loader
        it = iter(Loader({str(rows)!r}, 2, num_workers=4, prefetch=8))
        next(it)  # the workers keep prefetching; the program ends with them alive
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""


def test_without_a_real_stderr_the_stacks_go_to_a_file_the_error_names(
    rows: Path, stuck: StuckOnBatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loader = Loader(rows, 4, shuffle=False, transform=stuck, stall_timeout=STALL_S)
    with pytest.raises(WorkerError, match=r"dumped to .*datafuel-stall-") as info:
        list(loader)
    path = Path(str(info.value).rsplit("dumped to ", 1)[1].rstrip("."))
    assert "in wait_forever_on_batch" in path.read_text()
    path.unlink()


def test_closing_from_another_thread_ends_the_loop_instead_of_a_raw_error(
    rows: Path, stuck: StuckOnBatch
) -> None:
    loader = Loader(rows, 4, shuffle=False, num_workers=2, transform=stuck, stall_timeout=30)
    it = iter(loader)
    assert next(it)["idx"].tolist() == [0, 1, 2, 3]
    assert next(it)["idx"].tolist() == [4, 5, 6, 7]

    def teardown() -> None:  # another thread closes the pass while the loop waits
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the stuck worker is named
            it.close(timeout=0.2)

    closer = threading.Timer(0.3, teardown)
    closer.start()
    t0 = time.monotonic()
    with pytest.raises(StopIteration):
        next(it)  # batch 2 is stuck: the close ends the pass
    assert time.monotonic() - t0 < 10
    closer.join()
