"""``datafuel demo``: every stage, end to end, on built-in sample data.

Each stage contributes one step module, ``_demo_<step>.py``, with a
``run(ctx: DemoContext) -> None`` function; steps run in the order of ``STEPS`` and
may pass results to later steps through ``ctx.results``.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

#: Steps in running order: data flows ingest -> table -> ..., each feeding the loader.
STEPS = ("ingest", "table", "images", "text", "loader")


@dataclass
class DemoContext:
    """What a demo step gets: a work directory, a place for results, and ``say``."""

    workdir: Path
    seed: int = 0
    results: dict[str, Any] = field(default_factory=dict)

    def say(self, message: str) -> None:
        click.echo(f"  {message}")


@click.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's output here (default: a temporary directory, removed afterwards).",
)
@click.option(
    "--steps", default=",".join(STEPS), show_default=True, help="Comma-separated steps to run."
)
def demo(workdir: Path | None, steps: str) -> None:
    """Run every stage end to end on small built-in sample data and print what it did."""
    chosen = [s.strip() for s in steps.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown:
        raise click.BadParameter(
            f"unknown step(s) {unknown}; steps are {', '.join(STEPS)}", param_hint="--steps"
        )
    keep = workdir is not None
    root = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="datafuel-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(workdir=root)
    t_all = time.perf_counter()
    try:
        for step in STEPS:
            if step not in chosen:
                continue
            module = importlib.import_module(f"datafuel.cli._demo_{step}")
            click.echo(f"[{step}]")
            t0 = time.perf_counter()
            module.run(ctx)
            click.echo(f"  ({time.perf_counter() - t0:.1f} s)")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    click.echo(
        f"demo finished in {time.perf_counter() - t_all:.1f} s"
        + (f"; output in {root}" if keep else "")
    )
