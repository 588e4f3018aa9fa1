"""Helpers shared by the CLI verbs: progress bars, option parsing, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import click
from tqdm import tqdm

from datafuel.errors import ConfigError

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
) -> Any:
    """A tqdm bar on a terminal; silent when stderr is a pipe or a file."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )


def parse_fractions(text: str, *, option: str = "--split") -> tuple[float, ...]:
    """Parse '0.8,0.1,0.1' into floats; the split module checks that they sum to 1."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} must be comma-separated numbers like 0.8,0.1,0.1. Got {text!r} instead."
        ) from None
    return values


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=True, default=str))


def iter_lines(items: Iterable[str]) -> Iterator[str]:
    yield from items
