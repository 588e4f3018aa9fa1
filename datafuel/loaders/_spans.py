"""Per-stage spans of every batch: where the input pipeline spends its time, and why the loop waits.

A worker records one row per batch into a bounded ring of ``uint64`` rows: the
batch's key, the worker thread's ident and seven ``perf_counter_ns`` marks that bound
the six stages of :data:`STAGES` (sample order, gather, transform, finite check,
collate, H2D copy; a stage a batch skips has zero length). The training loop records
one row per batch for its wait in ``next()``. The rings are written in C
(``_spanring.c``: a row reserved in place, each mark one call, ~0.35 us a batch in
all), or, where that extension did not build, appended to ``array('Q')`` in Python
(~1.4 us a batch). No lock on the hot path (each call is atomic under the GIL), and
no Python objects kept per batch.

:func:`attribute` turns the rings into a per-stage breakdown: milliseconds per
batch, each stage's share of worker time, and its share of the loop's wait (the
overlap of each wait with the stages of the batch it waited for: the critical path).
The ``bottleneck`` is the stage with the largest share of the wait, or ``"none"``
when the loop waited less than :data:`BOTTLENECK_MIN_WAIT` of its wall time.
:func:`chrome_trace` writes the same spans as a Chrome/Perfetto JSON trace.
"""

from __future__ import annotations

import json
import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from datafuel._fs import atomic_write_bytes
from datafuel.errors import ConfigError, OutputError

__all__ = [
    "BOTTLENECK_MIN_WAIT",
    "SPAN_CAPACITY",
    "STAGES",
    "SpanRecorder",
    "attribute",
    "chrome_trace",
]

#: the worker-side stages, in the order a batch passes through them
STAGES = ("order", "gather", "transform", "finite", "collate", "copy")
#: the part of a wait not inside any stage of the awaited batch (not started yet, or
#: finished and not yet handed over: a worker's turn for the GIL, the queue)
HANDOFF = "handoff"
#: below this wait share of the loop's wall time, input is not the bottleneck
BOTTLENECK_MIN_WAIT = 0.05
_B_ROW = 4 + 1 + len(STAGES) + 1  # key, thread ident, marks (see new_marks)
_W_ROW = 4 + 2 + 1  # key, t0, t1, thread ident
#: batches kept per loader (older ones drop out of the breakdown and the trace)
SPAN_CAPACITY = 8192

_ns = time.perf_counter_ns
_process_ns = time.process_time_ns
_ident = threading.get_ident


def _profiler_checks() -> tuple[Any, Any]:
    """The process-wide flag module and the per-thread check of an active ``torch.profiler``."""
    try:
        import torch
        import torch.autograd.profiler as autograd_profiler

        return autograd_profiler, torch.autograd._profiler_enabled
    except (ImportError, AttributeError):  # pragma: no cover - torch is a loader dependency
        return None, lambda: False


_flag, _thread_profiled = _profiler_checks()


class _NoProfiler:
    _is_profiler_enabled = False


#: what ``profiling()`` reads first: ``PROFILER_FLAG._is_profiler_enabled`` (a module
#: attribute, True while any torch profiler records), cheap enough to read every batch
PROFILER_FLAG: Any = _flag if _flag is not None else _NoProfiler()


def profiling() -> bool:
    """Whether a ``torch.profiler`` records this thread: a module flag read, and only when
    that is set the per-thread C call (which, made every batch from busy threads, cost
    ~7% of the throughput of small batches: it is not free under GIL contention)."""
    return bool(_flag is not None and _flag._is_profiler_enabled and _thread_profiled())


#: where each stage starts in a batch's record (``GATHER`` is also where order ends, ...)
ORDER, GATHER, TRANSFORM, FINITE, COLLATE, COPY, END = range(5, 5 + len(STAGES) + 1)

try:  # the rings in C (optional extension, see _spanring.c): ~4x cheaper per batch
    from . import _spanring
except ImportError:  # pragma: no cover - the extension builds wherever the others do
    _spanring = None  # type: ignore[assignment]
if _spanring is not None and abs(_spanring.now() - _ns()) > 1_000_000:  # pragma: no cover
    _spanring = None  # type: ignore[assignment]  # its clock is not perf_counter_ns's here: use the Python rings


class _ListMarks(list):  # type: ignore[type-arg]
    """A batch's record as a plain list (the Python rings): ``stamp`` as a ring's Marks has."""

    __slots__ = ()

    def stamp(self, *ks: int) -> None:
        t = _ns()
        for k in ks:
            self[k] = t

    def key(self) -> tuple[int, ...]:
        return tuple(self[:4])


class _Profiled:
    """Marks whose every ``stamp`` also ends the open ``record_function`` range and opens the
    next stage's (while a ``torch.profiler`` records the worker's thread)."""

    __slots__ = ()

    def stamp(self, *ks: int) -> None:
        super().stamp(*ks)  # type: ignore[misc]
        self.open(max(ks))

    def open(self, k: int) -> None:
        self.close()
        if ORDER <= k < END:
            from torch.profiler import record_function

            r = record_function(f"datafuel.{STAGES[k - ORDER]}")
            r.__enter__()
            self.range = r  # type: ignore[misc]  # the slot is the subclasses' (layout)

    def close(self) -> None:
        """End the open range (the batch is done, or failed)."""
        r = getattr(self, "range", None)
        if r is not None:
            self.range = None  # type: ignore[misc,assignment]
            r.__exit__(None, None, None)


class _ProfiledListMarks(_Profiled, _ListMarks):
    __slots__ = ("range",)


if _spanring is not None:

    class _ProfiledRingMarks(_Profiled, _spanring.Marks):
        __slots__ = ("range",)


#: the C rings' plain marks type (a batch of it needs no :meth:`SpanRecorder.batch` call
#: unless it has CUDA events), or None without the extension
RING_MARKS: Any = None if _spanring is None else _spanring.Marks


def new_marks(pass_id: int, job: int, epoch: int, index: int) -> list[int]:
    """A batch's record in a plain list: its key, its worker's ident, then its stage
    boundaries (the Python rings'; :meth:`SpanRecorder.begin` is what the Loader calls).

    ``marks[ORDER]`` (``perf_counter_ns``) is set now; the producer stamps
    ``GATHER`` ... ``END``, each the end of one stage and the start of the next. While a
    ``torch.profiler`` records this thread, the marks also open a ``record_function``
    range per stage.
    """
    if profiling():
        m: list[int] = _ProfiledListMarks([pass_id, job, epoch, index, _ident(), _ns()] + [0] * 6)
        m.open(ORDER)  # type: ignore[attr-defined]
        return m
    return _ListMarks([pass_id, job, epoch, index, _ident(), _ns(), 0, 0, 0, 0, 0, 0])


def close_marks(marks: Any) -> None:
    """A batch failed: close its open ``record_function`` range, if any."""
    if isinstance(marks, _Profiled):
        marks.close()


class SpanRecorder:
    """Two bounded rings: the workers' batches and the loop's waits.

    The hot path is two calls bound at construction: ``marks = recorder.begin(pass,
    job, epoch, index)`` (a worker starts a batch; ``marks.stamp(GATHER)`` ... each
    stage boundary) and ``recorder.wait(pass, job, epoch, index, t0, t1)`` (the loop's
    wait in ``next()``); ``recorder.batch(marks, gpu)`` ends a batch. With the C
    extension both rings are fixed blocks written in place (the batch's row is in
    the ring from ``begin`` on, counted once its ``END`` is stamped); without it, flat
    ``array('Q')`` rows appended in one C call each.

    Examples
    --------
    >>> r = SpanRecorder()
    >>> m = r.begin(0, 0, 0, 0)
    >>> m.stamp(GATHER, TRANSFORM, FINITE, COLLATE, COPY, END)
    >>> r.batch(m)
    >>> r.wait(0, 0, 0, 0, m[ORDER], m[END])
    >>> len(r), len(r.snapshot()[1])
    (1, 1)
    """

    def __init__(self, capacity: int = SPAN_CAPACITY) -> None:
        self.capacity = capacity
        #: thread ident -> name (idents are recorded: cheaper than names)
        self.names: dict[int, str] = {}
        self.native = _spanring is not None
        if _spanring is not None:
            self._b = _spanring.Ring(capacity, _B_ROW, _flag, self._begin_profiled)
            self._w = _spanring.Ring(capacity, _W_ROW)
            self.begin = self._b.begin
            self.wait = self._w.put
        else:
            self.begin = new_marks  # type: ignore[assignment]
            self.wait = self._wait_list  # type: ignore[assignment]
        self.reset()

    def reset(self) -> None:
        if self.native:
            self._b.reset()
            self._w.reset()
        else:
            # flat uint64 arrays, a row per batch: nothing per batch is kept as Python
            # objects, and one extend() per record is a single C call, atomic under the GIL
            self.batches = array("Q")  # rows of _B_ROW: pass, job, epoch, index, ident, 7 marks
            self.waits = array("Q")  # rows of _W_ROW: pass, job, epoch, index, t0, t1, ident
        self.gpu: deque[tuple[tuple[int, ...], Any]] = deque(maxlen=self.capacity)
        #: (perf_counter_ns, process CPU ns) at each pass's start and end
        self.cpu: deque[tuple[int, int]] = deque(maxlen=self.capacity)

    def _begin_profiled(self, pass_id: int, job: int, epoch: int, index: int) -> Any:
        """``begin`` while a ``torch.profiler`` is on: ranges, if it records this thread."""
        if not _thread_profiled():
            return self._b.begin_as(_spanring.Marks, pass_id, job, epoch, index)
        m = self._b.begin_as(_ProfiledRingMarks, pass_id, job, epoch, index)
        m.open(ORDER)
        return m

    def name_threads(self, threads: Iterable[threading.Thread]) -> None:
        """Remember the names of ``threads`` (a pass's workers, once started)."""
        for t in threads:
            if t.ident is not None:
                self.names[t.ident] = t.name

    def _note_names(self) -> None:
        self.name_threads(threading.enumerate())

    def batch(self, marks: Any, gpu: Any = None) -> None:
        """A worker finished the batch of ``marks`` (from :meth:`begin`, ``END`` stamped)."""
        if isinstance(marks, _Profiled):
            marks.close()
        if not self.native:
            a = self.batches
            a.extend(marks)
            if len(a) > 2 * _B_ROW * self.capacity:
                del a[: _B_ROW * self.capacity]  # whole rows: every extend adds one
        if gpu is not None:
            self.gpu.append((marks.key(), gpu))

    def _wait_list(self, pass_id: int, job: int, epoch: int, index: int, t0: int, t1: int) -> None:
        """The loop waited ``[t0, t1]`` (ns) in ``next()`` for batch ``(pass_id, job, epoch,
        index)`` (the Python rings' ``wait``)."""
        a = self.waits
        a.extend((pass_id, job, epoch, index, t0, t1, _ident()))
        if len(a) > 2 * _W_ROW * self.capacity:
            del a[: _W_ROW * self.capacity]

    def waiter(
        self, pass_id: int, epoch: int, first: int, tally: Any = None, last: int = 0
    ) -> Callable[..., None]:
        """``w(job, t0, t1)``: :meth:`wait` for batch ``(pass_id, job, epoch, first + job)``,
        the pass's key bound once (the loop's one call a batch, on its critical path).

        With ``tally`` (a ``_spanring.Tally``, the meter's native store; C rings only):
        ``w(job, t0, t1, samples, nbytes)`` also records the batch into it, its wall time
        from ``last`` (ns), then from the previous ``t1``: spans and meter in one call."""
        if self.native:
            if tally is not None:
                return self._w.waiter(pass_id, epoch, first, tally, last)
            return self._w.waiter(pass_id, epoch, first)
        if tally is not None:
            raise ValueError("a tally goes with the C rings only")
        wait = self._wait_list

        def w(job: int, t0: int, t1: int) -> None:
            wait(pass_id, job, epoch, first + job, t0, t1)

        return w

    def sample_cpu(self) -> None:
        """Note the process's CPU time now (a pass starts or ends): for :meth:`busy_cores`;
        and the names of the threads alive (the workers, while a pass runs)."""
        self.cpu.append((_ns(), _process_ns()))
        self._note_names()

    def busy_cores(self, running: bool = False) -> float:
        """Average cores busy (the process's CPU time over wall time) from the first pass's
        start to the last one's end (``running``: to now)."""
        samples = list(self.cpu)
        if not samples:
            return 0.0
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        if running or len(samples) < 2:
            t1, c1 = _ns(), _process_ns()
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def __len__(self) -> int:
        """Batches recorded (at most ``capacity`` are reported)."""
        return len(self.snapshot()[0])

    def _rows(self) -> tuple[list[int], list[int]]:
        """Both rings' kept rows, flat, oldest first (one consistent copy each)."""
        if not self.native:
            return self.batches.tolist(), self.waits.tolist()
        out = []
        for ring in (self._b, self._w):
            data, _rows = ring.snapshot()
            a = array("Q")
            a.frombytes(data)
            out.append(a.tolist())
        return out[0], out[1]

    def snapshot(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The last ``capacity`` finished batches ``(key, ident, marks, gpu)`` and waits
        ``(key, t0, t1, ident)`` (safe while workers append)."""
        b, w = self._rows()
        self._note_names()
        gpu = dict(self._gpu_items())
        nb, nw = len(b) // _B_ROW, len(w) // _W_ROW
        batches = []
        for r in range(max(0, nb - self.capacity), nb):
            row = b[r * _B_ROW : (r + 1) * _B_ROW]
            if not row[_B_ROW - 1]:  # END not stamped: in flight, or failed
                continue
            key = tuple(row[:4])
            batches.append((key, row[4], row[5:], gpu.get(key)))
        waits = []
        for r in range(max(0, nw - self.capacity), nw):
            row = w[r * _W_ROW : (r + 1) * _W_ROW]
            waits.append((tuple(row[:4]), row[4], row[5], row[6]))
        return batches, waits

    def _gpu_items(self) -> list[tuple[tuple[int, ...], Any]]:
        while True:
            try:
                return list(self.gpu)
            except RuntimeError:  # "deque mutated during iteration": try again
                continue


def _gpu_ms(gpu: Any) -> float | None:
    """A copy's device time from its two CUDA events, once the copy is done (no sync)."""
    if gpu is None:
        return None
    start, end = gpu
    try:
        return float(start.elapsed_time(end)) if end.query() else None
    except RuntimeError:
        return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def attribute(
    recorder: SpanRecorder,
    *,
    starvation: float,
    workers: int,
    cores: int | None = None,
    running: bool = False,
) -> dict[str, Any]:
    """The per-stage breakdown, the bottleneck and one line of advice.

    Returns ``{"stages": {stage: {"ms_per_batch", "worker_share", "wait_share"}},
    "bottleneck", "advice", "cores", "busy_cores", "span_batches"}``; ``wait_share`` is
    the stage's part of the loop's wait (the critical path); ``handoff`` holds the
    wait outside any stage of the awaited batch.
    """
    cores = _cores() if cores is None else cores
    batches, waits = recorder.snapshot()
    n = len(batches)
    total, gpu_ms = _stage_totals(batches)
    waited, wait_ns = _waited(waits, {b[0]: b[2] for b in batches})
    busy = recorder.busy_cores(running)
    worker_ns = sum(total.values())
    stages: dict[str, dict[str, float]] = {}
    for stage in (*STAGES, HANDOFF):
        ns = total.get(stage, 0)
        stages[stage] = {
            "ms_per_batch": ns / n / 1e6 if n else 0.0,
            "worker_share": ns / worker_ns if worker_ns else 0.0,
            "wait_share": waited[stage] / wait_ns if wait_ns else 0.0,
        }
    if gpu_ms:
        stages["copy"]["gpu_ms_per_batch"] = sum(gpu_ms) / len(gpu_ms)
    bottleneck = "none"
    if waits and starvation >= BOTTLENECK_MIN_WAIT and wait_ns:
        bottleneck = max(waited, key=lambda s: waited[s])
    return {
        "stages": stages,
        "bottleneck": bottleneck,
        "advice": advice(bottleneck, stages, starvation, workers, cores, busy),
        "cores": cores,
        "busy_cores": busy,
        "span_batches": n,
    }


def _stage_totals(batches: list[tuple[Any, ...]]) -> tuple[dict[str, int], list[float]]:
    """Nanoseconds per stage over ``batches`` and the copies' device ms."""
    total = dict.fromkeys(STAGES, 0)
    gpu_ms: list[float] = []
    for _key, _thread, t, gpu in batches:
        for i, stage in enumerate(STAGES):
            total[stage] += t[i + 1] - t[i]
        g = _gpu_ms(gpu)
        if g is not None:
            gpu_ms.append(g)
    return total, gpu_ms


def _waited(
    waits: list[tuple[Any, ...]], marks: dict[Any, list[int]]
) -> tuple[dict[str, int], int]:
    """Each wait split by the stages of the batch it waited for (overlap); the total wait."""
    waited = dict.fromkeys((*STAGES, HANDOFF), 0)
    wait_ns = 0
    for key, w0, w1, _thread in waits:
        wait_ns += w1 - w0
        t = marks.get(key)
        inside = 0
        if t is not None:
            for i, stage in enumerate(STAGES):
                o = max(0, min(w1, t[i + 1]) - max(w0, t[i]))
                waited[stage] += o
                inside += o
        waited[HANDOFF] += w1 - w0 - inside
    return waited, wait_ns


def advice(
    bottleneck: str,
    stages: dict[str, dict[str, float]],
    starvation: float,
    workers: int,
    cores: int,
    busy: float,
) -> str:
    """One line on what to change, from the bottleneck and what the machine has."""
    if bottleneck == "none":
        return f"the loop waits {100 * starvation:.1f}%: input is not the bottleneck"
    used = min(cores, max(1, round(busy)))
    free = cores - used
    share = stages[bottleneck]["worker_share"] if bottleneck in STAGES else 0.0
    head = (
        f"{bottleneck} is {100 * share:.0f}% of worker time and {used} of {cores} cores are busy"
        if bottleneck in STAGES
        else f"{100 * stages[HANDOFF]['wait_share']:.0f}% of the loop's wait is batches being "
        f"handed over, not made ({workers} workers, {used} of {cores} cores busy)"
    )
    more = f"num_workers={max(workers + 1, min(cores, 2 * max(workers, 1)))}"
    tips = {
        "transform": (
            f"pass processes={free} to the transform (--processes {free}) or decode with DALI"
            if free > 0
            else "the CPU is saturated: decode on the GPU with DALI (--decode dali) or shrink the images"
        ),
        "gather": (
            f"pass {more} (memmap reads release the GIL)"
            if free > 0
            else "the CPU is saturated: read fewer fields, or keep the shard set on local disk"
        ),
        "finite": "pass check_finite=False once the data is known to be clean",
        "collate": f"pass {more}, or device= to collate into pinned buffers",
        "copy": "send smaller dtypes over the bus (uint8 images, uint16 tokens; widen on the GPU)",
        "order": "sample order is unusually slow: report it with this trace",
        HANDOFF: f"pass a larger batch_size (per-batch overhead dominates), or {more}",
    }
    return f"{head}: {tips[bottleneck]}"


def chrome_trace(
    recorder: SpanRecorder, path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The spans as a Chrome/Perfetto JSON trace (written to ``path`` when given).

    One track per worker thread and one for the training loop (named by thread);
    each batch is a slice with its stages nested inside; each wait in ``next()`` is a
    slice on the loop's track; a flow arrow goes from a batch's production to the
    wait that consumed it. Times are ``perf_counter`` microseconds.
    """
    batches, waits = recorder.snapshot()
    pid = os.getpid()
    tids: dict[int, int] = {}  # thread ident -> track number
    loop_threads = {w[3] for w in waits}

    def tid(ident: int) -> int:
        if ident not in tids:
            tids[ident] = len(tids) + 1
        return tids[ident]

    events: list[dict[str, Any]] = []
    produced: dict[Any, tuple[int, float]] = {}
    for record in batches:
        tr = tid(record[1])
        events.extend(_batch_events(record, tr, pid))
        t = record[2]
        produced[record[0]] = (tr, (t[0] + t[-1]) / 2e3)
    for n, (key, w0, w1, ident) in enumerate(waits):
        tr = tid(ident)
        events.append(_slice("wait", w0, w1, tr, pid, {"batch": key[3], "epoch": key[2]}))
        if key in produced:
            src, ts = produced[key]
            flow = {"name": "batch", "cat": "datafuel", "id": n + 1, "pid": pid}
            events.append({**flow, "ph": "s", "ts": ts, "tid": src})
            events.append({**flow, "ph": "f", "bp": "e", "ts": (w0 + w1) / 2e3, "tid": tr})
    meta = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "datafuel"}}]
    live = {t.ident: t.name for t in threading.enumerate()}
    for ident, tr in tids.items():
        name = recorder.names.get(ident) or live.get(ident) or f"thread {ident}"
        label = f"training loop ({name})" if ident in loop_threads else name
        meta.append(
            {"name": "thread_name", "ph": "M", "pid": pid, "tid": tr, "args": {"name": label}}
        )
    trace = {"traceEvents": meta + events, "displayTimeUnit": "ms"}
    if path is not None:
        _write_json(path, trace)
    return trace


def _batch_events(record: tuple[Any, ...], tid: int, pid: int) -> list[dict[str, Any]]:
    """One batch's slice on its worker's track, its (non-empty) stages nested inside."""
    (pass_id, _job, epoch, index), _thread, t, gpu = record
    args = {"epoch": epoch, "batch": index, "pass": pass_id}
    out = [_slice(f"batch {index}", t[0], t[-1], tid, pid, args)]
    for i, stage in enumerate(STAGES):
        if t[i + 1] > t[i]:
            stage_args: dict[str, Any] = {"batch": index, "pass": pass_id}
            g = _gpu_ms(gpu) if stage == "copy" else None
            if g is not None:
                stage_args["gpu_ms"] = g
            out.append(_slice(stage, t[i], t[i + 1], tid, pid, stage_args))
    return out


def _slice(name: str, t0: int, t1: int, tid: int, pid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "cat": "datafuel",
        "ph": "X",
        "ts": t0 / 1e3,
        "dur": (t1 - t0) / 1e3,
        "pid": pid,
        "tid": tid,
        "args": args,
    }


def _write_json(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    """Write ``obj`` atomically; a path that cannot be written is an :class:`OutputError`."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"trace path must be a file path. Got {path!r} instead.")
    if os.path.isdir(path):
        raise OutputError(
            f"trace path {str(path)!r} is a directory; name a file such as trace.json."
        )
    try:
        atomic_write_bytes(path, json.dumps(obj).encode(), fsync=False)
    except OSError as exc:
        raise OutputError(
            f"cannot write the trace to {str(path)!r}: {exc.strerror or exc}."
        ) from exc


def stage_names() -> Iterable[str]:
    """Every name a breakdown holds: the stages, then the handoff."""
    return (*STAGES, HANDOFF)
