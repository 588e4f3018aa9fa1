"""Fixtures shared by every test folder: real encoded images (see ``vision/image_samples.py``)
and one local Ray instance for the whole session (started only if a test asks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from image_samples import broken, make_folder, variety


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    return variety()


@pytest.fixture(scope="session")
def bad_images() -> dict[str, bytes]:
    return broken()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "src")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    ray = pytest.importorskip(
        "ray", reason="the ray extra is not installed: pip install 'datafuel[ray]'"
    )
    import engine_helpers

    # test helpers are not importable on workers: ship them by value
    ray.cloudpickle.register_pickle_by_value(engine_helpers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
