"""``datafuel build``: one sub-command per kind of input, each writing DIR/{train,val,test}."""

from __future__ import annotations

import click

from ._lazy import LazyGroup

_COMMANDS = {
    "table": (
        "datafuel.cli._build_table:build_table",
        "CSV/Parquet: split, clean, impute, winsorize, scale -> shards.",
    ),
    "images": (
        "datafuel.cli._build_images:build_images",
        "ImageFolder tree -> validated image shards.",
    ),
    "text": (
        "datafuel.cli._build_text:build_text",
        "Documents -> BPE trained on train -> token shards.",
    ),
}


@click.group("build", cls=LazyGroup, commands=_COMMANDS)
def build() -> None:
    """Split the input, fit on train only, and write DIR/train, DIR/val, DIR/test shard sets.

    Also writes what was fitted (recipe.json or tokenizer.json) and split.json. Rerunning
    an interrupted build with the same arguments continues it.
    """
