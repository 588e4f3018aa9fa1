"""``datafuel ingest`` (filled in by the ingest stage)."""

from __future__ import annotations

import click


@click.command("ingest")
@click.argument("url")
@click.option("--out", required=True, help="Output directory (Parquet parts + checkpoint).")
def ingest(url: str, out: str) -> None:
    """Pull records from a paginated REST API into Parquet, resumably, exactly once."""
    raise click.ClickException("`datafuel ingest` is not available yet in this version.")
