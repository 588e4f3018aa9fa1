"""``profile_plot``: a loader's recorded spans as one PNG (heartbeat, stages, throughput).

A picture of what :meth:`Loader.stats` says in numbers, drawn from the span
recorder's ``snapshot()`` (the last :data:`~datafuel.loaders._spans.SPAN_CAPACITY`
batches) and the starvation report:

1. the *heartbeat*: the training loop busy in its step (1) or waiting in ``next()``
   for data (0) over wall-clock time, as a GPU utilisation trace would show it (a
   starving loop flickers), with each step's wait in milliseconds below it;
2. throughput over time: samples per second in :data:`BINS` time bins (batches
   handed to the loop per bin times the mean samples per batch);
3. a stacked bar per worker thread of the milliseconds it spent in each stage,
   beside one for the training loop (busy against waiting).

The title names the bottleneck and gives the advice. The figure is always
:data:`WIDTH` x :data:`HEIGHT` pixels (``figsize=(12, 9)`` at ``dpi=100``), drawn with
matplotlib's object API (no ``pyplot``, no global state); matplotlib is an optional
extra (``pip install 'datafuel[plot]'``), imported only when a plot is drawn.
"""

from __future__ import annotations

import io
import os
import textwrap
import threading
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_bytes
from datafuel.errors import ConfigError, OutputError

from ._spans import STAGES

__all__ = ["BINS", "HEIGHT", "WIDTH", "check_matplotlib", "profile_plot"]

#: the figure's size in inches and its resolution: ``WIDTH`` x ``HEIGHT`` pixels
FIGSIZE = (12.0, 9.0)
DPI = 100
WIDTH, HEIGHT = int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI)
#: time bins of the throughput panel (fewer for a short run: ``MIN_PER_BIN`` batches a bin)
BINS = 40
MIN_PER_BIN = 5
#: how to install matplotlib without losing pillow-simd
INSTALL_HINT = "pip install 'datafuel[plot]' (then bash scripts/setup.sh puts pillow-simd back)"

#: one colour per stage (tab10, in :data:`STAGES` order), and the loop's two states
_STAGE_COLOURS = dict(
    zip(STAGES, ("#7f7f7f", "#1f77b4", "#ff7f0e", "#9467bd", "#bcbd22", "#8c564b"), strict=True)
)
_BUSY, _WAIT = "#2ca02c", "#d62728"


def _check_path(path: str | os.PathLike[str]) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"plot path must be a file path, such as profile.png. Got {path!r}.")
    if os.path.isdir(path):
        raise OutputError(
            f"plot path {str(path)!r} is a directory; name a file such as profile.png.",
            path=path,
        )
    return str(path)


def check_matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or a ConfigError with the install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(f"the profile plot needs matplotlib: {INSTALL_HINT}.") from exc
    return Figure, FigureCanvasAgg


def profile_plot(
    loader: Any, path: str | os.PathLike[str], *, title: str | None = None
) -> dict[str, Any]:
    """Draw the loader's heartbeat, throughput and per-stage time into the PNG ``path``.

    The PNG is always 1200 x 900 pixels (``figsize=(12, 9)``, ``dpi=100``); it is
    written atomically (a temp file beside ``path``, then a rename). ``title`` is an
    optional first line (such as the command that ran); the lines below it name the
    bottleneck, the wait share and throughput, and give the advice.

    Returns ``{"path", "width", "height", "title"}`` (``title``: the figure's full title).

    Raises
    ------
    ConfigError
        matplotlib is not installed (the message says how to install it), the loader
        was built with ``spans=False``, or it has recorded no batch yet.
    OutputError
        ``path`` is a directory or cannot be written.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from datafuel.loaders import Loader, write_shards
    >>> d = tempfile.mkdtemp()
    >>> _ = write_shards(d, x=np.zeros((64, 4), np.float32))
    >>> loader = Loader(d, 16)
    >>> for batch in loader:
    ...     pass
    >>> r = profile_plot(loader, os.path.join(d, "profile.png"))
    >>> r["width"], r["height"]
    (1200, 900)
    """
    path = _check_path(path)
    recorder = getattr(loader, "_spans", None)
    if recorder is None:
        raise ConfigError(
            "this loader was built with spans=False: there are no per-stage spans to plot; "
            "build it with spans=True (the default)."
        )
    batches, waits = recorder.snapshot()
    if not batches or not waits:
        raise ConfigError(
            "the loader has recorded no batch yet: iterate over it (at least one batch "
            "handed to the loop) before plotting its profile."
        )
    Figure, FigureCanvasAgg = check_matplotlib()
    report = loader.stats()
    names = dict(recorder.names)

    waits = sorted(waits, key=lambda w: w[1])
    w0 = np.array([w[1] for w in waits], dtype=np.int64)
    w1 = np.array([w[2] for w in waits], dtype=np.int64)
    origin = int(min(w0[0], min(int(b[2][0]) for b in batches)))
    t0 = (w0 - origin) / 1e9  # seconds since the first recorded event
    t1 = (w1 - origin) / 1e9
    end = float(t1[-1])

    head = _headline(report, title)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(4, 1, height_ratios=(1.0, 1.1, 1.3, 1.6), hspace=0.55)
    fig.subplots_adjust(left=0.2, right=0.97, top=0.935 - 0.028 * head.count("\n"), bottom=0.1)
    fig.suptitle(head, x=0.02, ha="left", fontsize=11, linespacing=1.4)

    beat = fig.add_subplot(grid[0])
    _heartbeat(beat, t0, t1)
    wait_ax = fig.add_subplot(grid[1], sharex=beat)
    _wait_ms(wait_ax, t0, t1)
    rate = fig.add_subplot(grid[2], sharex=beat)
    _throughput(rate, t1, report, end)
    bars = fig.add_subplot(grid[3])
    _stage_bars(bars, batches, waits, names, t0, t1)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    try:
        atomic_write_bytes(path, buf.getvalue(), fsync=False)
    except OSError as exc:
        raise OutputError(
            f"cannot write the profile plot to {path!r}: {exc.strerror or exc}.", path=path
        ) from exc
    return {"path": path, "width": WIDTH, "height": HEIGHT, "title": head}


def _headline(report: Any, title: str | None) -> str:
    lines = [title] if title else []
    bottleneck = report.bottleneck or "none"
    lines.append(
        f"bottleneck: {bottleneck}   |   the loop waits {100 * report.starvation:.1f}% of "
        f"its wall time   |   {report.samples_per_s:,.0f} samples/s over {report.batches:,} batches"
    )
    if report.advice:
        lines.extend(textwrap.wrap(f"advice: {report.advice}", width=130))
    return "\n".join(lines)


def _heartbeat(ax: Any, t0: np.ndarray, t1: np.ndarray) -> None:
    """Busy (1) from the end of each wait to the start of the next, waiting (0) inside."""
    busy = np.column_stack((t1[:-1], (t0[1:] - t1[:-1]).clip(min=0)))
    wait = np.column_stack((t0, t1 - t0))
    ax.broken_barh(busy, (0, 1), color=_BUSY, lw=0, label="busy (in its step)")
    ax.broken_barh(wait, (0, 1), color=_WAIT, lw=0, label="waiting for data (in next())")
    ax.set_ylim(0, 1.35)
    ax.set_yticks([0, 1], ["wait", "busy"])
    ax.set_title("heartbeat: the training loop, busy or waiting for data", loc="left", fontsize=10)
    ax.legend(loc="upper right", ncol=2, fontsize=8, frameon=False)
    ax.tick_params(labelbottom=False)


def _wait_ms(ax: Any, t0: np.ndarray, t1: np.ndarray) -> None:
    ms = 1e3 * (t1 - t0)
    ax.vlines(t0, 0, ms, color=_WAIT, lw=1.0)
    ax.plot(t0, ms, "o", color=_WAIT, ms=2)
    p95 = float(np.percentile(ms, 95))
    ax.axhline(p95, color="black", lw=0.8, ls="--", label=f"p95 {p95:.2f} ms")
    ax.set_ylabel("wait (ms)")
    ax.set_ylim(0, max(1e-3, float(ms.max())) * 1.25)
    ax.set_title("each step's wait in next()", loc="left", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.tick_params(labelbottom=False)


def _throughput(ax: Any, handed: np.ndarray, report: Any, end: float) -> None:
    """Samples/s per time bin: batches handed out in the bin x mean samples per batch."""
    per_batch = report.samples / report.batches if report.batches else 0.0
    bins = max(1, min(BINS, len(handed) // MIN_PER_BIN))
    edges = np.linspace(0.0, max(end, 1e-6), bins + 1)
    counts, _ = np.histogram(handed, bins=edges)
    rate = counts * per_batch / np.diff(edges)
    ax.stairs(rate, edges, fill=True, color="#1f77b4", alpha=0.35)
    ax.stairs(rate, edges, color="#1f77b4", lw=1.2, label=f"per {end / bins * 1e3:,.0f} ms bin")
    mean = len(handed) * per_batch / end if end > 0 else 0.0  # over the same clock as the bins
    ax.axhline(mean, color="black", lw=0.8, ls="--", label=f"mean {mean:,.0f} samples/s")
    ax.set_ylim(0, max(1.0, float(rate.max())) * 1.3)
    ax.set_xlim(0, end)
    ax.set_xlabel("wall-clock time since the first batch (s)")
    ax.set_ylabel("samples/s")
    ax.yaxis.set_major_formatter(_thousands())
    ax.set_title("throughput to the training loop", loc="left", fontsize=10)
    ax.legend(loc="upper right", ncol=2, fontsize=8, frameon=False)


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:,.0f}")


def _stage_bars(
    ax: Any,
    batches: list[tuple[Any, ...]],
    waits: list[tuple[Any, ...]],
    names: dict[int, str],
    t0: np.ndarray,
    t1: np.ndarray,
) -> None:
    """Per worker thread (by name), ms in each stage summed over its batches; the loop busy vs waiting."""
    # by thread name: each pass (epoch) starts fresh worker threads with the same names
    live = {t.ident: t.name for t in threading.enumerate()}
    per: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for _key, ident, marks, _gpu in batches:
        name = names.get(ident) or live.get(ident) or f"thread {ident}"
        d = np.diff(np.asarray(marks, dtype=np.int64)).clip(min=0) / 1e6
        per[name] = per.get(name, 0.0) + d
        count[name] = count.get(name, 0) + 1
    threads = sorted(per)
    labels = [f"{i} ({count[i]} batches)" for i in threads]
    loop_ident = int(waits[0][3])
    loop_name = names.get(loop_ident) or live.get(loop_ident) or f"thread {loop_ident}"
    labels.append(f"training loop ({loop_name})")
    y = np.arange(len(labels))[::-1]  # first worker on top, the loop at the bottom
    left = np.zeros(len(threads))
    for s, stage in enumerate(STAGES):
        width = np.array([per[i][s] for i in threads])
        ax.barh(y[:-1], width, left=left, color=_STAGE_COLOURS[stage], label=stage, height=0.6)
        left += width
    wait_ms = float(1e3 * (t1 - t0).sum())
    busy_ms = float(1e3 * (t0[1:] - t1[:-1]).clip(min=0).sum())
    ax.barh(y[-1], busy_ms, color=_BUSY, height=0.6, label="loop busy")
    ax.barh(y[-1], wait_ms, left=busy_ms, color=_WAIT, height=0.6, label="loop waiting")
    wall_ms = 1e3 * float(t1[-1] - t0[0]) or 1.0
    for yi, name in zip(y[:-1], threads, strict=True):
        total = float(per[name].sum())
        top = STAGES[int(np.argmax(per[name]))]
        ax.annotate(
            f"{total:,.1f} ms in stages ({100 * total / wall_ms:.1f}% of the run; most in {top})",
            (total, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.annotate(
        f"busy {busy_ms:,.1f} ms, waiting {wait_ms:,.1f} ms",
        (busy_ms + wait_ms, y[-1]),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
    )
    ax.set_xlim(0, max(busy_ms + wait_ms, float(left.max(initial=0.0))) * 1.35)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("time (ms, summed over the batches recorded)")
    ax.xaxis.set_major_formatter(_thousands())
    ax.set_title("where each thread spent its time, per stage", loc="left", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=8, fontsize=8, frameon=False)
