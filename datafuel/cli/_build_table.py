"""``datafuel build table`` (filled in by the tabular stage)."""

from __future__ import annotations

import click


@click.command("table")
@click.argument("input_path", metavar="INPUT")
@click.option("--out", required=True, help="Output directory.")
def build_table(input_path: str, out: str) -> None:
    """Read CSV/Parquet, split, clean, impute, winsorize and scale (fit on train), write shards."""
    raise click.ClickException("`datafuel build table` is not available yet in this version.")
