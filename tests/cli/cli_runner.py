"""The type of the ``cli`` fixture (``conftest.py``): ``cli(*argv) -> (status, stdout, stderr)``."""

from __future__ import annotations

from collections.abc import Callable

Cli = Callable[..., tuple[int, str, str]]
