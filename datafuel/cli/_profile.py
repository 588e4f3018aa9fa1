"""``datafuel profile`` (filled in by the loader stage)."""

from __future__ import annotations

import click


@click.command("profile")
@click.argument("shards_dir")
def profile(shards_dir: str) -> None:
    """Run the loader against a simulated training step; report throughput and GPU starvation."""
    raise click.ClickException("`datafuel profile` is not available yet in this version.")
