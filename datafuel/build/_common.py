"""What every build shares: the engine it runs on, progress, the split record, the summary."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datafuel._fs import atomic_write_json
from datafuel.engine import Engine, get_engine

__all__ = [
    "SUMMARY_KEYS",
    "Progress",
    "Timer",
    "engine_for",
    "make_summary",
    "report",
    "write_split_record",
]

#: ``on_progress(stage, n, total)``: ``n`` more records of ``stage`` are done (of ``total``,
#: when known). Stages are short names such as ``"validate"``, ``"write train"``.
Progress = Callable[[str, int, "int | None"], None]

#: Keys of the summary every build returns (kind-specific keys come beside them).
SUMMARY_KEYS = ("counts", "engine", "fitted", "kind", "out", "seconds", "skipped")

SPLIT_RECORD = "split.json"


@contextmanager
def engine_for(engine: str | Engine | None) -> Iterator[Engine]:
    """The engine a build runs on: ``None``/``"local"``/``"ray"`` or one given.

    An engine the build made is closed when it ends; one the caller gave stays open
    (the caller may run several builds on one Ray connection).
    """
    made = not isinstance(engine, Engine)
    runner = get_engine(engine)
    try:
        yield runner
    finally:
        if made:
            runner.close()


def report(on_progress: Progress | None, stage: str, total: int | None) -> Callable[[int], None]:
    """A ``rows -> None`` callback reporting ``stage`` to ``on_progress`` (or doing nothing)."""
    if on_progress is None:
        return lambda n: None
    on_progress(stage, 0, total)
    return lambda n: on_progress(stage, n, total)


def write_split_record(out: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """``out/split.json``, written atomically (every build writes one)."""
    atomic_write_json(Path(out) / SPLIT_RECORD, dict(record))


class Timer:
    """Named wall-clock laps for a build's ``seconds``."""

    def __init__(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

    def seconds(self) -> dict[str, float]:
        return {**self.laps, "total": round(time.perf_counter() - self._t0, 3)}


def make_summary(
    kind: str,
    out: str | os.PathLike[str],
    *,
    counts: Mapping[str, int],
    fitted: Mapping[str, Any],
    skipped: int,
    engine: Engine,
    seconds: Mapping[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """The summary every build returns: :data:`SUMMARY_KEYS` plus the kind's own keys.

    ``counts`` are records written per shard set; ``fitted`` names what was fitted on
    train (file name -> fingerprint); ``skipped`` counts input records left out.
    """
    return {
        "kind": kind,
        "out": str(out),
        "counts": dict(counts),
        "fitted": dict(fitted),
        "skipped": int(skipped),
        "engine": engine.name,
        "seconds": dict(seconds),
        **extra,
    }
