"""datafuel: turn raw data into batches that keep a GPU busy.

Stages live in sub-packages (``ingest``, ``clean``, ``scale``, ``vision``, ``text``,
``synthetic``, ``loaders``) and ``split``; they all feed :class:`datafuel.loaders.Loader`.
"""

from __future__ import annotations

from datafuel import errors
from datafuel._version import __version__
from datafuel.errors import DatafuelError

__all__ = ["DatafuelError", "__version__", "errors"]
