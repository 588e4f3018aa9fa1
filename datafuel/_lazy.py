"""Module attributes loaded on first use (PEP 562), so importing a package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (relative to ``package``) on first use.

    The value is cached in the package's namespace, so the import runs once.
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            module = importlib.import_module(package)
            value = getattr(importlib.import_module(table[name], package), name)
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
