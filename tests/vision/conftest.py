"""Fixtures: real encoded images generated in the tests (see image_samples.py)."""

from __future__ import annotations

from pathlib import Path

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
