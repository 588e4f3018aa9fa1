"""One local Ray instance for the whole test session (started only if a test asks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
