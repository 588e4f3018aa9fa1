"""``datafuel resample`` (filled in by the synthetic stage)."""

from __future__ import annotations

import click


@click.command("resample")
@click.argument("tokens_dir")
@click.option("--out", required=True, help="Output directory for the resampled token shards.")
def resample(tokens_dir: str, out: str) -> None:
    """Semi-synthetic token resampling: redraw tokens a frozen prior finds near-certain."""
    raise click.ClickException("`datafuel resample` is not available yet in this version.")
