"""``--categorical``, ``--missing-indicators`` and ``--expand-dates`` of ``datafuel build table``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from datafuel.errors import ConfigError

__all__ = ["column_options", "parse_categorical"]

F = TypeVar("F", bound=Callable[..., Any])
_MODES = ("onehot", "codes")


def parse_categorical(values: Sequence[str]) -> str | dict[str, str]:
    """``("codes",)`` -> ``"codes"``; ``("onehot", "city=codes")`` -> ``{"*": "onehot", "city": "codes"}``."""
    default, per_column = "onehot", {}
    for text in values:
        col, sep, mode = text.rpartition("=")
        mode = mode.strip().lower()
        if mode not in _MODES or (sep and not col.strip()):
            raise ConfigError(
                f"--categorical must be onehot, codes or COL=onehot|codes. Got {text!r}."
            )
        if sep:
            per_column[col.strip()] = mode
        else:
            default = mode
    return {"*": default, **per_column} if per_column else default


def column_options(command: F) -> F:
    """Add the column-step options (passed as ``categorical``, ``missing_indicators``, ``expand_dates``)."""
    command = click.option(
        "--expand-dates",
        is_flag=True,
        help="Turn timestamp/date columns into year, month, day, day-of-week and elapsed-days "
        "features (origin: the earliest train value) instead of refusing them.",
    )(command)
    command = click.option(
        "--missing-indicators",
        is_flag=True,
        help="Append one 0/1 column per numeric feature missing somewhere in train "
        "(missingindicator_<name>), after the other features.",
    )(command)
    command = click.option(
        "--categorical",
        multiple=True,
        metavar="MODE|COL=MODE",
        help="Text columns as onehot (default) or codes: an int64 field `cat` of category "
        "codes for embeddings (train vocabularies, 0 = unknown or missing, cardinalities in "
        "the manifest metadata; no --max-categories limit). Repeatable, per column too: "
        "--categorical codes --categorical color=onehot.",
    )(command)
    return command
