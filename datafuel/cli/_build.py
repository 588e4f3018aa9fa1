"""``datafuel build``: one sub-command per kind of input, each writing DIR/{train,val,test}."""

from __future__ import annotations

import click

from ._build_images import build_images
from ._build_table import build_table
from ._build_text import build_text


@click.group("build")
def build() -> None:
    """Split the input, fit on train only, and write DIR/train, DIR/val, DIR/test shard sets.

    Also writes what was fitted (recipe.json or tokenizer.json) and split.json. Rerunning
    an interrupted build with the same arguments continues it.
    """


for command in (build_table, build_images, build_text):
    build.add_command(command)
