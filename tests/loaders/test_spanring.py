"""The per-stage spans' rings in C (``_spanring``): rows in place, oldest first, bounded."""

from __future__ import annotations

import threading
import time
from array import array

import pytest

from datafuel.loaders import _spans
from datafuel.loaders._spans import END, GATHER, ORDER, TRANSFORM, SpanRecorder

_spanring = pytest.importorskip("datafuel.loaders._spanring")
Ring, Marks = _spanring.Ring, _spanring.Marks


def rows(ring: object, width: int) -> list[list[int]]:
    data, n = ring.snapshot()  # type: ignore[attr-defined]
    a = array("Q")
    a.frombytes(data)
    flat = a.tolist()
    assert len(flat) == n * width
    return [flat[i * width : (i + 1) * width] for i in range(n)]


def test_clock_is_perf_counter_ns() -> None:
    before = time.perf_counter_ns()
    now = _spanring.now()
    after = time.perf_counter_ns()
    assert before <= now <= after


def test_begin_writes_key_ident_and_first_mark() -> None:
    r = Ring(4, 12)
    t0 = time.perf_counter_ns()
    m = r.begin(3, 1, 2, 9)
    assert isinstance(m, Marks) and len(m) == 12
    assert m.key() == (3, 1, 2, 9)
    assert m[4] == threading.get_ident()
    assert t0 <= m[ORDER] <= time.perf_counter_ns()
    assert m.tolist()[ORDER + 1 :] == [0] * 6
    m.stamp(GATHER)
    m.stamp(TRANSFORM, END)
    assert m[ORDER] <= m[GATHER] <= m[TRANSFORM] == m[END]
    m[7] = 12345
    assert rows(r, 12)[0] == m.tolist() and m[-5] == 12345


def test_ring_keeps_the_last_capacity_rows_oldest_first() -> None:
    r = Ring(3, 7)
    for i in range(5):
        r.put(0, i, 0, i, 10 * i, 10 * i + 1)
    got = rows(r, 7)
    assert [row[1] for row in got] == [2, 3, 4]
    assert got[0][4:6] == [20, 21] and got[0][6] == threading.get_ident()
    assert r.count == 5 and r.capacity == 3 and r.width == 7
    r.reset()
    assert r.count == 0 and rows(r, 7) == []


def test_a_stale_marks_writes_only_its_own_row() -> None:
    r = Ring(2, 12)
    old = r.begin(0, 0, 0, 0)
    r.begin(0, 1, 0, 1)
    r.begin(0, 2, 0, 2)  # reuses old's row
    old.stamp(END)  # a wrong value in that row, never outside the block
    got = rows(r, 12)
    assert [row[1] for row in got] == [1, 2]
    r.reset()
    old[11] = 7
    assert rows(r, 12) == []


def test_bad_calls_are_errors() -> None:
    r = Ring(2, 7)
    with pytest.raises(TypeError, match="6 values"):
        r.put(1, 2)
    with pytest.raises(TypeError, match="begin"):
        r.begin(1, 2)
    with pytest.raises(OverflowError):
        r.put(-1, 0, 0, 0, 0, 0)
    m = Ring(2, 12).begin(0, 0, 0, 0)
    with pytest.raises(IndexError):
        m[12] = 1
    with pytest.raises(IndexError):
        m.stamp(99)
    with pytest.raises(TypeError):
        del m[3]
    with pytest.raises(TypeError):
        m["x"] = 1
    with pytest.raises(ValueError):
        Ring(0, 7)
    with pytest.raises(ValueError):
        Ring(4, 3)
    with pytest.raises(TypeError, match="begin_as"):
        r.begin_as(list, 0, 0, 0, 0)
    with pytest.raises(TypeError, match="hook"):
        Ring(2, 12, object(), 5)


def test_hook_runs_while_the_flag_is_on() -> None:
    class Flag:
        _is_profiler_enabled = False

    seen: list[tuple[int, ...]] = []

    def hook(*key: int) -> object:
        seen.append(key)
        return "hooked"

    r = Ring(4, 12, Flag, hook)
    assert isinstance(r.begin(0, 1, 2, 3), Marks)
    Flag._is_profiler_enabled = True
    assert r.begin(0, 1, 2, 3) == "hooked" and seen == [(0, 1, 2, 3)]


def test_threads_write_their_own_rows() -> None:
    r = Ring(10_000, 12)
    idents: dict[int, int] = {}

    def work(w: int) -> None:
        idents[w] = threading.get_ident()
        for j in range(2000):
            m = r.begin(0, w, 0, j)
            m.stamp(GATHER, TRANSFORM, END)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = rows(r, 12)
    assert len(got) == 8000
    for w in range(4):
        mine = [row for row in got if row[1] == w]
        assert [row[3] for row in mine] == list(range(2000))
        assert {row[4] for row in mine} == {idents[w]}
        assert all(row[ORDER] <= row[GATHER] <= row[END] for row in mine)


def test_recorder_skips_batches_in_flight_and_counts_finished_ones() -> None:
    rec = SpanRecorder(capacity=8)
    assert rec.native
    done = rec.begin(0, 0, 0, 0)
    done.stamp(GATHER, TRANSFORM, 7, 8, 9, END)
    rec.batch(done)
    rec.begin(0, 1, 0, 1).stamp(GATHER)  # in flight (or failed): END never stamped
    batches, _ = rec.snapshot()
    assert [b[0] for b in batches] == [(0, 0, 0, 0)] and len(rec) == 1


def test_recorder_falls_back_to_python_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spans, "_spanring", None)
    rec = SpanRecorder(capacity=4)
    assert not rec.native
    for j in range(6):
        m = rec.begin(0, j, 0, j)
        m.stamp(GATHER, TRANSFORM, 7, 8, 9, END)
        rec.batch(m)
        rec.wait(0, j, 0, j, m[ORDER], m[END])
    batches, waits = rec.snapshot()
    assert [b[0][1] for b in batches] == [2, 3, 4, 5] and len(waits) == 4


def test_waiter_puts_the_loop_wait_with_the_pass_key_bound() -> None:
    r = Ring(3, 7)
    w = r.waiter(4, 2, 100)
    for j in range(5):  # 5 rows into 3: the oldest two are overwritten
        w(j, 10 * j, 10 * j + 5)
    ident = threading.get_ident()
    assert rows(r, 7) == [[4, j, 2, 100 + j, 10 * j, 10 * j + 5, ident] for j in (2, 3, 4)]
    with pytest.raises(TypeError):
        w(1, 2)
    with pytest.raises(TypeError):
        w(1, 2, t1=3)
    with pytest.raises(OverflowError):
        w(-1, 2, 3)
    with pytest.raises(ValueError, match="width 7"):
        Ring(3, 12).waiter(1, 2, 3)
    with pytest.raises(OverflowError):
        r.waiter(-1, 0, 0)
    assert r.count == 5  # the failed calls wrote nothing


@pytest.mark.parametrize("native", [True, False])
def test_recorder_waiter_equals_wait(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SpanRecorder.waiter(pass, epoch, first)(j, t0, t1)`` records what
    ``wait(pass, j, epoch, first + j, t0, t1)`` does, C rings or Python."""
    if not native:
        monkeypatch.setattr(_spans, "_spanring", None)
    a, b = SpanRecorder(capacity=8), SpanRecorder(capacity=8)
    assert a.native is native
    w = a.waiter(7, 3, 40)
    for j in range(4):
        w(j, 1000 + j, 2000 + j)
        b.wait(7, j, 3, 40 + j, 1000 + j, 2000 + j)
    assert a.snapshot()[1] == b.snapshot()[1] and len(a.snapshot()[1]) == 4


def test_a_ring_never_initialised_refuses_every_call() -> None:
    """``Ring.__new__`` without ``__init__`` has no rows: a clear error, not a division by
    zero or a NULL write."""
    r = Ring.__new__(Ring)
    for call in (
        lambda: r.begin(1, 2, 3, 4),
        lambda: r.begin_as(Marks, 1, 2, 3, 4),
        lambda: r.put(1, 2, 3, 4, 5),
        lambda: r.waiter(1, 2, 3),
        r.snapshot,
        r.reset,
    ):
        with pytest.raises(RuntimeError, match="not initialised"):
            call()


@pytest.mark.parametrize("width", [6, 7, 8, 9, 12, 16, 17, 64])
def test_rows_padded_to_cache_lines_read_back_whole(width: int) -> None:
    r = Ring(5, width)
    for j in range(13):
        r.put(*range(j * 100, j * 100 + width - 1))
    assert [row[:-1] for row in rows(r, width)] == [
        list(range(j * 100, j * 100 + width - 1)) for j in range(8, 13)
    ]


# -- the meter's native store (Tally) and the loop's one call for spans and meter ----------
def tally_arrays(t: object) -> tuple[list[float], list[float], int, int]:
    wait, wall, samples, nbytes = t.snapshot()  # type: ignore[attr-defined]
    a, b = array("d"), array("d")
    a.frombytes(wait)
    b.frombytes(wall)
    return a.tolist(), b.tolist(), samples, nbytes


def test_tally_adds_batches_and_grows() -> None:
    t = _spanring.Tally()
    assert len(t) == 0 and tally_arrays(t) == ([], [], 0, 0)
    for i in range(3000):  # past the first growth (1024) twice
        t.add(i / 1e3, 2 * i / 1e3, 4, 100 + i)
    wait, wall, samples, nbytes = tally_arrays(t)
    assert len(t) == 3000 and wait == [i / 1e3 for i in range(3000)]
    assert wall == [2 * i / 1e3 for i in range(3000)]
    assert samples == 12_000 and nbytes == sum(100 + i for i in range(3000))
    t.reset()
    assert len(t) == 0 and tally_arrays(t) == ([], [], 0, 0)
    for bad in ((1.0, 2.0, 3), ("a", 1.0, 1, 1), (1.0, 1.0, 1.5, 1), (1.0, 1.0, 1, 2**64)):
        with pytest.raises((TypeError, OverflowError)):
            t.add(*bad)
    assert len(t) == 0  # the failed calls added nothing


def test_recorder_adds_wait_and_wall_from_the_loop_clock() -> None:
    t = _spanring.Tally()
    w = t.recorder(1_000)
    w(0, 3_000, 5_000, 8, 64)  # waited 2 us; 4 us since the pass began
    w(1, 6_000, 6_500, 8, 64)  # waited 0.5 us; 1.5 us since the last batch
    wait, wall, samples, nbytes = tally_arrays(t)
    assert wait == [2e-6, 0.5e-6] and wall == [4e-6, 1.5e-6]
    assert (samples, nbytes) == (16, 128)
    with pytest.raises(TypeError, match="samples, nbytes"):
        w(2, 1, 2)
    with pytest.raises(OverflowError):
        w(-1, 1, 2, 3, 4)
    with pytest.raises(TypeError):
        t.recorder()
    assert len(t) == 2


def test_a_waiter_with_a_tally_writes_the_row_and_the_meter_in_one_call() -> None:
    r, t = Ring(4, 7), _spanring.Tally()
    w = r.waiter(4, 2, 100, t, 500)
    for j in range(3):
        w(j, 1000 * (j + 1), 1000 * (j + 1) + 10, 5, 7)
    ident = threading.get_ident()
    assert rows(r, 7) == [
        [4, j, 2, 100 + j, 1000 * (j + 1), 1000 * (j + 1) + 10, ident] for j in range(3)
    ]
    wait, wall, samples, nbytes = tally_arrays(t)
    assert wait == [10e-9] * 3 and wall == [510e-9, 1000e-9, 1000e-9]
    assert (samples, nbytes) == (15, 21)
    with pytest.raises(TypeError, match="tally"):
        r.waiter(1, 2, 3, object(), 0)
    with pytest.raises(TypeError):
        r.waiter(1, 2, 3, t)
    with pytest.raises(TypeError, match="samples, nbytes"):
        w(3, 1, 2)
    assert r.count == 3 and len(t) == 3


def test_the_loader_records_meter_and_spans_as_before(tmp_path) -> None:
    """A Loader with the native store and rings (one call a batch) reports what the
    Python meter and rings report from the same clock reads."""
    import numpy as np

    from datafuel.loaders import Loader, write_shards
    from datafuel.loaders._stats import StarvationMeter

    write_shards(tmp_path / "s", x=np.arange(400, dtype=np.int64), shard_bytes=400)
    fused = Loader(tmp_path / "s", 16, num_workers=1)
    it = iter(fused)
    assert it._fused is not None and it._span_wait is None
    n = sum(1 for _ in it)
    waits = fused._spans.snapshot()[1]
    assert len(waits) == n == 25 and len(fused._meter.tally) == n
    rep = fused._meter.report()
    assert rep.batches == n and rep.samples == 400 and rep.bytes == 400 * 8
    # each batch's meter wait is its span's (t1 - t0), its wall the time since the last
    wait_s = [(w[2] - w[1]) / 1e9 for w in waits]  # (key, t0, t1, ident)
    np.testing.assert_allclose(fused._meter._wait, wait_s, rtol=0, atol=1e-12)
    assert all(w >= x for w, x in zip(fused._meter._wall, fused._meter._wait, strict=True))
    # the pure-Python meter, the same loader otherwise: the same counts
    plain = Loader(tmp_path / "s", 16, num_workers=1)
    plain._meter = StarvationMeter(native=False)
    it = iter(plain)
    assert it._fused is None and it._span_wait is not None
    assert sum(1 for _ in it) == n
    other = plain._meter.report()
    assert (other.batches, other.samples, other.bytes) == (n, 400, 3200)
    assert len(plain._spans.snapshot()[1]) == n
