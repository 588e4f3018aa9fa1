"""``profile_plot``: the loader's spans as a PNG of the documented size, and its refusals."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from datafuel.demo import run_demo
from datafuel.errors import ConfigError, OutputError
from datafuel.loaders import Loader, write_shards
from datafuel.loaders._plot import HEIGHT, INSTALL_HINT, WIDTH, profile_plot

pytest.importorskip("matplotlib")


@pytest.fixture()
def rows(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_shards(tmp_path / "rows", x=rng.normal(size=(1024, 8)).astype(np.float32))
    return tmp_path / "rows"


class SleepyTransform:
    """Passes ``x`` through after sleeping 4 ms per batch."""

    output_spec: ClassVar[dict[str, Any]] = {"x": (np.float32, (8,))}

    def __call__(self, raw: dict[str, Any], info: Any) -> dict[str, Any]:
        time.sleep(0.004)
        return {"x": np.asarray(raw["x"])}


def drained(loader: Loader, step_s: float = 0.0, epochs: int = 1) -> Loader:
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            if step_s:
                time.sleep(step_s)
            del batch
    return loader


def test_the_png_decodes_at_the_documented_size(rows: Path, tmp_path: Path) -> None:
    loader = drained(Loader(rows, 32, num_workers=2), step_s=0.001, epochs=2)
    out = tmp_path / "profile.png"
    r = profile_plot(loader, out, title="two epochs of rows")
    assert (WIDTH, HEIGHT) == (1200, 900)  # what the docstring and the README say
    assert r["path"] == str(out) and (r["width"], r["height"]) == (WIDTH, HEIGHT)
    with Image.open(out) as im:
        im.load()  # decodes the whole image, not only the header
        assert im.format == "PNG" and im.size == (WIDTH, HEIGHT)
    assert r["title"].startswith("two epochs of rows\nbottleneck: ")
    assert out.stat().st_size < 200_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_slow_transform_is_named_in_the_title(rows: Path, tmp_path: Path) -> None:
    loader = drained(Loader(rows, 32, transform=SleepyTransform(), num_workers=1))
    r = profile_plot(loader, tmp_path / "slow.png")
    assert loader.stats().bottleneck == "transform"
    first, *rest = r["title"].split("\n")
    assert first.startswith("bottleneck: transform")
    assert "advice: transform is " in "\n".join(rest)
    assert all(len(line) <= 130 for line in rest)  # long advice is wrapped


def test_a_directory_is_refused(rows: Path, tmp_path: Path) -> None:
    loader = drained(Loader(rows, 64))
    with pytest.raises(OutputError, match=r"plot path .* is a directory") as info:
        profile_plot(loader, tmp_path)
    assert str(tmp_path) in str(info.value)


def test_an_unwritable_place_is_an_output_error(rows: Path, tmp_path: Path) -> None:
    loader = drained(Loader(rows, 64))
    target = tmp_path / "missing" / "profile.png"
    with pytest.raises(OutputError, match="cannot write the profile plot to") as info:
        profile_plot(loader, target)
    assert str(target) in str(info.value)


def test_spans_off_and_no_batches_are_config_errors(rows: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spans=False"):
        profile_plot(drained(Loader(rows, 64, spans=False)), tmp_path / "a.png")
    with pytest.raises(ConfigError, match="recorded no batch yet"):
        profile_plot(Loader(rows, 64), tmp_path / "b.png")
    assert not list(tmp_path.glob("*.png"))


def test_without_matplotlib_the_error_says_how_to_install_it(
    rows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = drained(Loader(rows, 64))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match="needs matplotlib") as info:
        profile_plot(loader, tmp_path / "p.png")
    assert INSTALL_HINT in str(info.value) and "pip install 'datafuel[plot]'" in INSTALL_HINT
    assert not (tmp_path / "p.png").exists()


def test_the_demo_writes_profile_png(tmp_path: Path) -> None:
    lines: list[str] = []
    run_demo(tmp_path, ["loader"], say=lines.append)
    with Image.open(tmp_path / "profile.png") as im:
        assert im.size == (WIDTH, HEIGHT)
    assert any(f"--plot {tmp_path / 'profile.png'}" in line for line in lines)


def test_the_demo_without_matplotlib_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    lines: list[str] = []
    run_demo(tmp_path, ["loader"], say=lines.append)
    assert not (tmp_path / "profile.png").exists()
    note = "no profile.png: matplotlib is not installed (pip install 'datafuel[plot]')"
    assert any(line.strip() == note for line in lines), lines


def test_loader_plot_method(tmp_path: Path) -> None:
    write_shards(tmp_path / "s", x=np.zeros((256, 4), np.float32))
    loader = Loader(tmp_path / "s", 32)
    for _ in loader:
        pass
    out = loader.plot(tmp_path / "p.png", title="mine")
    assert out["title"].startswith("mine")
    with Image.open(tmp_path / "p.png") as im:
        assert im.size == (out["width"], out["height"]) == (1200, 900)
