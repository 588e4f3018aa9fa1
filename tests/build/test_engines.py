"""`datafuel build table|images|text --engine ray` writes the local engine's bytes."""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import same_tree
from golden_builds import image_folder

import datafuel.build._images as build_images
import datafuel.build._table as build_table
from datafuel import build
from datafuel.cli import main
from datafuel.demo import write_corpus
from datafuel.errors import DecodeError, NonFiniteError
from datafuel.loaders import ShardSet

HOUSES = str(files("datafuel") / "data" / "houses.csv")


def manifest_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every manifest the driver writes (workers never write one)."""
    import datafuel.loaders._writer as writer

    seen: list[str] = []
    real = writer.atomic_write_bytes

    def counted(path: Any, data: bytes) -> None:
        seen.append(str(path))
        real(path, data)

    monkeypatch.setattr(writer, "atomic_write_bytes", counted)
    return seen


# -- table --------------------------------------------------------------------------------
@pytest.mark.parametrize("impute", ["knn", "median"])
def test_table_ray_equals_local(
    ray_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, impute: str
) -> None:
    monkeypatch.setattr(build_table, "TABLE_UNIT_ROWS", 97)  # many units, cut inside units
    kw: dict[str, Any] = {"target": "price", "drop": ["id"], "impute": impute, "shard_bytes": 1000}
    local = build.table(HOUSES, tmp_path / "local", **kw)
    writes = manifest_writes(monkeypatch)
    remote = build.table(HOUSES, tmp_path / "ray", engine="ray", **kw)
    assert same_tree(tmp_path / "local", tmp_path / "ray") == []
    assert remote["counts"] == local["counts"] and remote["columns"] == local["columns"]
    assert sorted(writes) == sorted(
        str(tmp_path / "ray" / n / "manifest.json") for n in ("train", "val", "test")
    )
    assert len(ShardSet(tmp_path / "ray" / "train", verify=True).shards) > 3


def test_table_nan_reaching_a_shard_names_the_same_row(
    ray_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_table, "TABLE_UNIT_ROWS", 101)
    kw: dict[str, Any] = {"target": "price", "drop": ["id"], "impute": "none", "max_missing": 1.0}
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(NonFiniteError) as err:
            build.table(HOUSES, tmp_path / engine, engine=engine, **kw)
        errors.append(err.value)
        assert not (tmp_path / engine / "train" / "manifest.json").exists()
    assert (errors[0].field, errors[0].row) == (errors[1].field, errors[1].row)


def test_cli_engine_ray_and_bad_options(
    ray_session: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["build", "table", HOUSES, "--target", "price", "--drop", "id", "--shard-bytes", "4096"]
    for engine in ("local", "ray"):
        assert main([*args, "--out", str(tmp_path / engine), "--engine", engine, "--json"]) == 0
    assert same_tree(tmp_path / "local", tmp_path / "ray") == []
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "x"), "--ray-address", "10.9.9.9:6379"]) == 1
    assert "add --engine ray" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--engine", "spark"]) == 2
    assert "spark" in capsys.readouterr().err


# -- images -------------------------------------------------------------------------------
@pytest.mark.parametrize("max_side", [None, 40])
def test_images_ray_equals_local(
    ray_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_side: int | None
) -> None:
    monkeypatch.setattr(build_images, "IMAGE_UNIT_FILES", 5)
    src = image_folder(tmp_path / "src", corrupt=True)
    kw: dict[str, Any] = {"on_error": "skip", "max_side": max_side, "shard_bytes": 9000}
    local = build.images(src, tmp_path / "local", **kw)
    remote = build.images(src, tmp_path / "ray", engine="ray", **kw)
    assert remote["engine"] == "ray" and local["engine"] == "local"
    same = {k: v for k, v in local.items() if k not in ("out", "engine", "seconds")}
    assert {k: remote[k] for k in same} == same
    assert local["skipped"] == 1
    assert same_tree(tmp_path / "local", tmp_path / "ray") == []
    assert len(ShardSet(tmp_path / "ray" / "train", verify=True).shards) > 2


def test_corrupt_image_fails_naming_the_file(ray_session: Any, tmp_path: Path) -> None:
    src = image_folder(tmp_path / "src", corrupt=True)
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(DecodeError) as err:
            build.images(src, tmp_path / engine, engine=engine)
        errors.append(err.value)
    assert str(errors[1]) == str(errors[0])
    assert errors[1].path == errors[0].path == str(src / "dog" / "007.jpg")


# -- text ---------------------------------------------------------------------------------
def test_text_ray_equals_local(ray_session: Any, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(corpus / "a.jsonl", 150, seed=1)
    write_corpus(corpus / "b.jsonl", 90, seed=2)
    kw: dict[str, Any] = {"vocab_size": 400, "shard_bytes": 3000, "batch_chars": 2500}
    local = build.text([corpus], tmp_path / "local", **kw)
    remote = build.text([corpus], tmp_path / "ray", engine="ray", **kw)
    assert (remote["counts"], remote["tokens"]) == (local["counts"], local["tokens"])
    assert remote["tokenizer_sha256"] == local["tokenizer_sha256"]
    # .build-text.json holds timings; everything else is identical, tokenizer.json included
    diffs = same_tree(tmp_path / "local", tmp_path / "ray")
    assert diffs == [".build-text.json"]
    state = json.loads((tmp_path / "ray" / ".build-text.json").read_text())
    assert state["done"] and state["summary"]["counts"] == local["counts"]
    assert len(ShardSet(tmp_path / "ray" / "train", verify=True).shards) > 3


@pytest.mark.parametrize("kind", ["table", "images", "text"])
def test_without_ray_each_build_says_how_to_install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    inputs = {
        "table": [HOUSES, "--target", "price"],
        "images": [str(image_folder(tmp_path / "src", corrupt=False))],
        "text": [str(files("datafuel") / "data" / "text" / "chronicles.jsonl")],
    }[kind]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    out = tmp_path / "out"
    assert main(["build", kind, *inputs, "--out", str(out), "--engine", "ray"]) == 1
    assert "pip install 'datafuel[ray]'" in capsys.readouterr().err
    assert not out.exists()  # refused before any work
