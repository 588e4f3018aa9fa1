"""``run_demo``: the walkthrough behind ``datafuel demo``, one step module at a time."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from datafuel._lock import make_output_dir
from datafuel.errors import ConfigError

from ._context import STEPS, DemoContext

__all__ = ["run_demo"]


def _check_steps(steps: Iterable[str]) -> list[str]:
    chosen = [s.strip() for s in ([steps] if isinstance(steps, str) else steps)]
    chosen = [s for s in chosen if s]
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown:
        raise ConfigError(
            f"steps must be among {', '.join(STEPS)}. Got unknown step(s) {unknown} instead."
        )
    return [s for s in STEPS if s in chosen]


def run_demo(
    workdir: str | os.PathLike[str],
    steps: Iterable[str] = STEPS,
    *,
    seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen demo steps (in the order of :data:`STEPS`) on built-in sample data.

    Parameters
    ----------
    workdir
        Every step writes under this directory (created if missing; kept afterwards).
    steps
        Names from :data:`STEPS`; they always run in that order, whatever the order given.
        A step that reads an earlier one's output falls back to shipped sample data
        when that step is not chosen.
    seed
        Seed of the sample data, splits and models.
    say
        Called with each progress line (a step's header, what it did, its time);
        ``None`` stays silent. The ``datafuel demo`` command passes ``click.echo``.

    Returns
    -------
    dict
        ``workdir``, ``steps`` (those run), ``seconds`` per step and in ``total``, and
        ``results``: what the steps left for each other (output directories, counts).

    Examples
    --------
    >>> import tempfile
    >>> lines = []
    >>> s = run_demo(tempfile.mkdtemp(), ["ingest"], say=lines.append)
    >>> lines[0], s["steps"], s["results"]["ingest_records"]
    ('[ingest]', ['ingest'], 300)
    """
    chosen = _check_steps(steps)
    emit = say if say is not None else (lambda message: None)
    root = Path(workdir)
    make_output_dir(root)
    ctx = DemoContext(workdir=root, seed=seed, say=lambda message: emit(f"  {message}"))
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    for step in chosen:
        module = importlib.import_module(f"{__package__}._steps.{step}")
        emit(f"[{step}]")
        t0 = time.perf_counter()
        module.run(ctx)
        seconds[step] = time.perf_counter() - t0
        emit(f"  ({seconds[step]:.1f} s)")
    seconds["total"] = time.perf_counter() - t_all
    return {"workdir": root, "steps": chosen, "seconds": seconds, "results": ctx.results}
