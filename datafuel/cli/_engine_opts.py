"""``--engine local|ray`` and ``--ray-address``, shared by the ``datafuel build`` verbs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from datafuel.engine import Engine

F = TypeVar("F", bound=Callable[..., Any])


def engine_options(command: F) -> F:
    """Add ``--engine`` and ``--ray-address`` (passed as ``engine`` and ``ray_address``)."""
    command = click.option(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join with --engine ray (ray://HOST:10001 or HOST:6379); "
        "default: $RAY_ADDRESS, else a local Ray instance on this machine. The output "
        "directory must be a path every node can write.",
    )(command)
    command = click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Where the per-record work runs: this process, or Ray tasks "
        "(pip install 'datafuel[ray]'). Both write identical bytes.",
    )(command)
    return command


@contextmanager
def open_engine(engine: str, ray_address: str | None) -> Iterator[Engine]:
    """The engine ``--engine``/``--ray-address`` name, closed when the verb ends.

    A missing Ray or a ``--ray-address`` without ``--engine ray`` is refused here,
    before any work.
    """
    from datafuel.engine import get_engine

    runner = get_engine(engine, ray_address=ray_address)
    try:
        yield runner
    finally:
        runner.close()
