"""Each package's ``__all__`` is sorted and names exactly its public exports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import datafuel

PACKAGES = [
    *sorted(
        m.name
        for m in pkgutil.walk_packages(datafuel.__path__, "datafuel.")
        if m.ispkg and "._" not in m.name and not m.name.startswith("datafuel.cli")
    ),
    "datafuel",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_exact(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert list(exported) == sorted(exported), f"{name}.__all__ is not sorted"
    for attr in exported:
        assert hasattr(module, attr), (
            f"{name}.__all__ names {attr!r} but the package does not export it"
        )
    public = {
        k
        for k, v in vars(module).items()
        if not k.startswith("_")
        and k != "annotations"
        and not (type(v).__name__ == "module" and k not in exported)
    }
    assert public <= set(exported), (
        f"{name} exports {sorted(public - set(exported))} outside __all__"
    )


def test_every_stage_package_exists() -> None:
    for stage in ("ingest", "clean", "scale", "vision", "text", "synthetic", "loaders"):
        importlib.import_module(f"datafuel.{stage}")
