"""What every demo step gets, and the order the steps run in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "DemoContext"]

#: Steps in running order: data flows ingest -> table -> ..., each feeding the loader.
STEPS = ("ingest", "table", "images", "text", "loader")


def _silent(message: str) -> None:
    """The default ``say``: library code never prints."""


@dataclass
class DemoContext:
    """A work directory, a place for results later steps read, and ``say`` for progress lines.

    Each step is a module ``datafuel.demo._steps.<step>`` with ``run(ctx) -> None``; it
    writes under ``ctx.workdir``, reports through ``ctx.say`` and leaves what later steps
    need (output directories, counts) in ``ctx.results``.
    """

    workdir: Path
    seed: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    say: Callable[[str], None] = _silent
