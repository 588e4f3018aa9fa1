"""``StarvationMeter``: how long the training loop waited for data.

Per batch the loader records two numbers: the time the loop spent blocked inside
``next()`` (waiting for the batch) and the wall time since the previous batch was
handed out (for the first batch of an iteration: since the iteration started). The
starvation fraction is ``sum(wait) / sum(wall)``: 0 when data was always ready, 1
when the loop did nothing but wait.
"""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

try:  # the meter's native store (optional extension, see _spanring.c)
    from ._spanring import Tally as _tally
except ImportError:  # pragma: no cover - the extension did not build
    _tally = None  # type: ignore[assignment,misc]

__all__ = ["StarvationMeter", "StarvationReport"]

_SPAN_KEYS = ("stages", "bottleneck", "advice", "cores", "busy_cores", "span_batches")


@dataclass(frozen=True)
class StarvationReport:
    """What :meth:`Loader.stats` returns.

    Attributes
    ----------
    batches, samples, bytes
        Counted over the batches handed to the loop.
    wall_s, wait_s
        Total wall time across those batches and the part of it spent waiting.
    starvation
        ``wait_s / wall_s`` in ``[0, 1]`` (0 when nothing was measured).
    wait_p50_ms, wait_p95_ms, wait_max_ms
        Percentiles of the per-batch wait.
    samples_per_s, bytes_per_s
        ``samples / wall_s`` and ``bytes / wall_s``.
    mix, mix_counts, mix_target
        A mixture's realised mix on this rank: each source's share of the samples and
        their counts, beside the target weights (``None`` when not a mixture).
    stages
        Per stage (``order``, ``gather``, ``transform``, ``finite``, ``collate``,
        ``copy``, and ``handoff``: waits outside every stage of the awaited batch):
        ``ms_per_batch``, ``worker_share`` (its share of the workers' time) and
        ``wait_share`` (its share of the loop's wait: the critical path). Over the
        last ``span_batches`` batches (``None`` with ``spans=False``).
    bottleneck
        The stage with the largest ``wait_share``, or ``"none"`` when the loop waited
        less than 5% of its wall time (input is not the bottleneck).
    advice
        One line on what to change, from the bottleneck and the machine's cores.
    cores, busy_cores
        Cores this process may run on (``os.sched_getaffinity``) and how many were
        busy on average (worker CPU time plus the loop's time outside its waits).
    """

    batches: int
    samples: int
    bytes: int
    wall_s: float
    wait_s: float
    starvation: float
    wait_p50_ms: float
    wait_p95_ms: float
    wait_max_ms: float
    samples_per_s: float
    bytes_per_s: float
    mix: dict[str, float] | None = None
    mix_counts: dict[str, int] | None = None
    mix_target: dict[str, float] | None = None
    stages: dict[str, dict[str, float]] | None = None
    bottleneck: str | None = None
    advice: str | None = None
    cores: int | None = None
    busy_cores: float | None = None
    span_batches: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (``mix`` keys only for a mixture, stage keys with spans)."""
        out = asdict(self)
        if self.mix is None:
            for key in ("mix", "mix_counts", "mix_target"):
                del out[key]
        if self.stages is None:
            for key in _SPAN_KEYS:
                del out[key]
        return out

    def __str__(self) -> str:
        return (
            (
                f"{self.batches} batches, {self.samples_per_s:,.0f} samples/s, "
                f"{self.bytes_per_s / 1e6:,.1f} MB/s, starvation {100 * self.starvation:.1f}% "
                f"(wait p50 {self.wait_p50_ms:.2f} ms, p95 {self.wait_p95_ms:.2f} ms)"
            )
            + (
                ""
                if self.mix is None
                else "; mix " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.mix.items())
            )
            + ("" if self.advice is None else f"; bottleneck {self.bottleneck}: {self.advice}")
        )


class StarvationMeter:
    """Accumulates per-batch ``(wait, wall, samples, bytes)``; cheap enough to leave on.

    Recording is two appends to float64 arrays and two integer additions per batch
    (16 bytes of memory a batch); percentiles are computed only by :meth:`report`. With
    the C rings built (``_spanring.Tally``) the store is native and the Loader records a
    batch with one C call (:meth:`recorder`, merged with the spans' wait row); else two
    ``array("d")``.

    Examples
    --------
    >>> m = StarvationMeter()
    >>> m.record(wait=0.01, wall=0.04, samples=32, nbytes=1024)
    >>> m.record(wait=0.03, wall=0.06, samples=32, nbytes=1024)
    >>> round(m.report().starvation, 3), round(m.report().samples_per_s)
    (0.4, 640)
    """

    def __init__(self, native: bool = True) -> None:
        #: the native store, or None (the arrays)
        self.tally: Any = _tally() if native and _tally is not None else None
        self.reset()

    def reset(self) -> None:
        if self.tally is not None:
            self.tally.reset()
            return
        # compact float64 arrays: 16 bytes a batch, no Python float objects kept
        self._wait_a: array[float] = array("d")
        self._wall_a: array[float] = array("d")
        self._samples_n = 0
        self._bytes_n = 0

    def record(self, *, wait: float, wall: float, samples: int, nbytes: int) -> None:
        if self.tally is not None:
            self.tally.add(wait, wall, samples, nbytes)
            return
        self._wait_a.append(wait)
        self._wall_a.append(wall)
        self._samples_n += samples
        self._bytes_n += nbytes

    def recorder(self, last_ns: int) -> Any:
        """``w(job, t0, t1, samples, nbytes)``, one C call recording a batch the loop waited
        for in ``[t0, t1]`` (``perf_counter_ns``), its wall time from ``last_ns`` (then from
        the previous ``t1``); ``None`` without the native store."""
        return None if self.tally is None else self.tally.recorder(last_ns)

    def _arrays(self) -> tuple[array[float], array[float], int, int]:
        if self.tally is None:
            return self._wait_a, self._wall_a, self._samples_n, self._bytes_n
        wait, wall, samples, nbytes = self.tally.snapshot()
        a, b = array("d"), array("d")
        a.frombytes(wait)
        b.frombytes(wall)
        return a, b, samples, nbytes

    @property
    def _wait(self) -> array[float]:
        """Each batch's wait (s), oldest first (a copy from the native store)."""
        return self._arrays()[0]

    @property
    def _wall(self) -> array[float]:
        """Each batch's wall time (s)."""
        return self._arrays()[1]

    @property
    def _samples(self) -> int:
        return self._arrays()[2]

    @property
    def _bytes(self) -> int:
        return self._arrays()[3]

    def report(self) -> StarvationReport:
        waits, walls, samples, nbytes = self._arrays()
        n = len(waits)
        wait = np.array(waits, dtype=np.float64)
        wall_s = float(np.array(walls, dtype=np.float64).sum()) if n else 0.0
        wait_s = float(wait.sum()) if n else 0.0
        p50, p95, pmax = (
            (float(np.percentile(wait, 50)), float(np.percentile(wait, 95)), float(wait.max()))
            if n
            else (0.0, 0.0, 0.0)
        )
        per_s = (lambda x: x / wall_s) if wall_s > 0 else (lambda x: 0.0)
        return StarvationReport(
            batches=n,
            samples=samples,
            bytes=nbytes,
            wall_s=wall_s,
            wait_s=wait_s,
            starvation=min(1.0, wait_s / wall_s) if wall_s > 0 else 0.0,
            wait_p50_ms=1e3 * p50,
            wait_p95_ms=1e3 * p95,
            wait_max_ms=1e3 * pmax,
            samples_per_s=float(per_s(samples)),
            bytes_per_s=float(per_s(nbytes)),
        )
