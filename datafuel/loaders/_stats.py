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
    (16 bytes of memory a batch); percentiles are computed only by :meth:`report`.

    Examples
    --------
    >>> m = StarvationMeter()
    >>> m.record(wait=0.01, wall=0.04, samples=32, nbytes=1024)
    >>> m.record(wait=0.03, wall=0.06, samples=32, nbytes=1024)
    >>> round(m.report().starvation, 3), round(m.report().samples_per_s)
    (0.4, 640)
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # compact float64 arrays: 16 bytes a batch, no Python float objects kept
        self._wait: array[float] = array("d")
        self._wall: array[float] = array("d")
        self._samples = 0
        self._bytes = 0

    def record(self, *, wait: float, wall: float, samples: int, nbytes: int) -> None:
        self._wait.append(wait)
        self._wall.append(wall)
        self._samples += samples
        self._bytes += nbytes

    def report(self) -> StarvationReport:
        n = len(self._wait)
        wait = np.array(self._wait, dtype=np.float64)
        wall_s = float(np.array(self._wall, dtype=np.float64).sum()) if n else 0.0
        wait_s = float(wait.sum()) if n else 0.0
        p50, p95, pmax = (
            (float(np.percentile(wait, 50)), float(np.percentile(wait, 95)), float(wait.max()))
            if n
            else (0.0, 0.0, 0.0)
        )
        per_s = (lambda x: x / wall_s) if wall_s > 0 else (lambda x: 0.0)
        return StarvationReport(
            batches=n,
            samples=self._samples,
            bytes=self._bytes,
            wall_s=wall_s,
            wait_s=wait_s,
            starvation=min(1.0, wait_s / wall_s) if wall_s > 0 else 0.0,
            wait_p50_ms=1e3 * p50,
            wait_p95_ms=1e3 * p95,
            wait_max_ms=1e3 * pmax,
            samples_per_s=float(per_s(self._samples)),
            bytes_per_s=float(per_s(self._bytes)),
        )
