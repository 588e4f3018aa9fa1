"""The ``datafuel`` command: a thin layer over the Python API.

Each verb lives in its own module; this one wires them into one click group and
turns any :class:`~datafuel.errors.DatafuelError` into a one-line reason and a
non-zero exit status.
"""

from __future__ import annotations

import sys

import click

from datafuel._version import __version__
from datafuel.errors import DatafuelError

from ._lazy import LazyGroup

__all__ = ["cli", "main"]


_COMMANDS = {
    "build": (
        "datafuel.cli._build:build",
        "Split, fit on train only, and write train/val/test shard sets.",
    ),
    "ingest": (
        "datafuel.cli._ingest:ingest",
        "Pull a paginated REST API into Parquet, resumably, exactly once.",
    ),
    "resample": (
        "datafuel.cli._resample:resample",
        "Semi-synthetic token resampling with a frozen prior.",
    ),
    "profile": (
        "datafuel.cli._profile:profile",
        "Loader throughput and GPU starvation against a simulated step.",
    ),
    "inspect": (
        "datafuel.cli._inspect:inspect_cmd",
        "Schema, shard count, rows and bytes of a shard set (--verify).",
    ),
    "demo": ("datafuel.cli._demo:demo", "Every stage end to end on built-in sample data."),
}


@click.group(
    cls=LazyGroup,
    commands=_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="datafuel")
def cli() -> None:
    """datafuel: turn raw data into batches that keep a GPU busy.

    Typical flow: `datafuel ingest` (REST API -> Parquet), `datafuel build table|images|text`
    (split, fit on train, write shard sets), `datafuel resample` (semi-synthetic tokens),
    `datafuel profile` (loader throughput and GPU starvation), `datafuel inspect`.
    Run `datafuel demo` to see every stage on built-in sample data.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    try:
        cli.main(args=argv, prog_name="datafuel", standalone_mode=False)
    except DatafuelError as exc:
        click.echo(f"datafuel: error: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("datafuel: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
