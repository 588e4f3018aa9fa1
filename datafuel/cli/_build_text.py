"""``datafuel build text`` (filled in by the text stage)."""

from __future__ import annotations

import click


@click.command("text")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, help="Output directory.")
def build_text(inputs: tuple[str, ...], out: str) -> None:
    """Split documents, train or load a byte-level BPE tokenizer on train, write token shards."""
    raise click.ClickException("`datafuel build text` is not available yet in this version.")
