"""``pil_build()`` names the PIL actually imported: pillow-simd, or stock Pillow with the fix."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import PIL

from datafuel.vision import pil_build


def test_it_names_the_distribution_that_holds_the_imported_pil() -> None:
    info = pil_build()
    assert info["version"] == PIL.__version__
    assert Path(info["path"]) == Path(PIL.__file__).resolve().parent
    dist = importlib.metadata.distribution(info["distribution"])
    assert Path(str(dist.locate_file("PIL/__init__.py"))).resolve() == Path(PIL.__file__).resolve()
    assert info["simd"] is (info["distribution"] == "pillow-simd")
    assert isinstance(info["libjpeg_turbo"], str)  # both builds here link libjpeg-turbo


def test_stock_pillow_comes_with_how_to_restore_pillow_simd() -> None:
    info = pil_build()
    if info["simd"]:
        assert info["advice"] is None
    else:  # the second CI run (.ci/run), in a venv where stock Pillow replaced pillow-simd
        assert "bash scripts/setup.sh" in info["advice"] and "3x slower" in info["advice"]
