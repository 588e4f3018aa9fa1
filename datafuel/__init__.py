"""datafuel: turn raw data into batches that keep a GPU busy.

Stages live in sub-packages (``ingest``, ``clean``, ``scale``, ``vision``, ``text``,
``synthetic``, ``loaders``) and ``split``; they all feed :class:`datafuel.loaders.Loader`.
``datafuel.split(table, ...)`` splits a table before anything is fitted (the
``datafuel.split`` module is callable); :class:`datafuel.Recipe` fits clean/scale
steps on the train split only and saves them as JSON.
"""

from __future__ import annotations

import typing

from datafuel import errors, split
from datafuel._version import __version__
from datafuel.errors import DatafuelError

__all__ = ["DatafuelError", "Recipe", "__version__", "errors", "split"]

if typing.TYPE_CHECKING:
    from datafuel.recipe import Recipe


def __getattr__(name: str) -> typing.Any:
    # Recipe pulls in scikit-learn; load it on first use so `import datafuel` stays light
    if name == "Recipe":
        from datafuel.recipe import Recipe

        return Recipe
    raise AttributeError(f"module 'datafuel' has no attribute {name!r}")
