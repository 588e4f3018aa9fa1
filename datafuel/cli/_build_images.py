"""``datafuel build images`` (filled in by the vision stage)."""

from __future__ import annotations

import click


@click.command("images")
@click.argument("input_dir")
@click.option("--out", required=True, help="Output directory.")
def build_images(input_dir: str, out: str) -> None:
    """Read an ImageFolder tree (one sub-folder per class), split, and write image shards."""
    raise click.ClickException("`datafuel build images` is not available yet in this version.")
