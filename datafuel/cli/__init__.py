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

from ._build import build
from ._demo import demo
from ._ingest import ingest
from ._inspect import inspect_cmd
from ._profile import profile
from ._resample import resample

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="datafuel")
def cli() -> None:
    """datafuel: turn raw data into batches that keep a GPU busy.

    Typical flow: `datafuel ingest` (REST API -> Parquet), `datafuel build table|images|text`
    (split, fit on train, write shard sets), `datafuel resample` (semi-synthetic tokens),
    `datafuel profile` (loader throughput and GPU starvation), `datafuel inspect`.
    Run `datafuel demo` to see every stage on built-in sample data.
    """


for command in (build, ingest, resample, profile, inspect_cmd, demo):
    cli.add_command(command)


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
