"""``datafuel demo``: every stage, end to end, on built-in sample data.

The walkthrough is :func:`datafuel.demo.run_demo`; this verb parses the options,
picks the work directory and prints what each step reports.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click

from datafuel.demo import STEPS, run_demo


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
    t_all = time.perf_counter()
    try:
        run_demo(root, chosen, say=click.echo)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    click.echo(
        f"demo finished in {time.perf_counter() - t_all:.1f} s"
        + (f"; output in {root}" if keep else "")
    )
