"""The scripts in examples/ run top to bottom and end with the loader's report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path) -> None:
    if script.name == "train_lightning.py":  # the dev extra installs it
        pytest.importorskip(
            "lightning", reason="lightning is not installed (pip install -e '.[dev]')"
        )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "starvation" in proc.stdout  # every example ends with loader.stats()


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_use_the_demo_models_instead_of_copies(script: Path) -> None:
    # one copy of each small model lives in datafuel.demo; an example imports it
    # (Lightning's LightningModule is a subclass by its design; its model is TabularMLP)
    if script.name == "train_lightning.py":
        text = script.read_text(encoding="utf-8")
        assert text.count("class ") == 1 and "(pl.LightningModule)" in text
        return
    assert "class " not in script.read_text(encoding="utf-8"), f"{script.name} defines a class"
