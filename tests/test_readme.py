"""Every ```python block of README.md runs as written.

The blocks run in order, in one namespace (as a reader pasting them into one session),
in a temporary directory holding the inputs they name, made from datafuel's shipped
sample data: ``houses.csv`` (``datafuel/data/houses.csv``), ``photos/``
(:func:`datafuel.demo.write_sample_images`) and ``corpus/`` (the corpus at
:func:`datafuel.demo.sample_corpus_path`). The loader block picks ``device="cuda"`` only
where ``torch.cuda.is_available()``, so it takes the CPU path on a machine without a GPU.
"""

from __future__ import annotations

import re
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from datafuel.demo import sample_corpus_path, write_sample_images

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


@pytest.fixture()
def sample_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(str(files("datafuel") / "data" / "houses.csv"), tmp_path / "houses.csv")
    write_sample_images(tmp_path / "photos", 8)  # 3 classes x 8 JPEGs
    (tmp_path / "corpus").mkdir()
    shutil.copy(sample_corpus_path(), tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_its_snippets() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 4
    assert any("build.table(" in b for b in blocks) and any("Loader(" in b for b in blocks)


def test_every_python_snippet_runs_in_order(sample_inputs: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks()):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # a failure names the block in its traceback
    # what the snippets promise to leave behind
    for split in ("train", "val", "test"):
        assert (sample_inputs / "out" / split / "manifest.json").exists()
    assert (sample_inputs / "out" / "recipe.json").exists()
    from datafuel.loaders import ShardSet

    train = ShardSet(sample_inputs / "out" / "train")
    assert set(train.fields) == {"x", "y"}  # the tabular snippet writes the target too
    assert (sample_inputs / "ckpt" / "loader.json").exists()
    assert len(namespace["batch"]["x"]) == 3  # the shard snippet's gather
