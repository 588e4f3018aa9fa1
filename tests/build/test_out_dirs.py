"""An ``out`` holding another kind of build is refused; ``overwrite=True`` replaces it."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from datafuel import build
from datafuel.demo import sample_corpus_path
from datafuel.errors import ConfigError
from datafuel.loaders import ShardSet

HOUSES = str(files("datafuel") / "data" / "houses.csv")


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def table_build(out: Path) -> None:
    build.table(HOUSES, out, target="price", drop=["id"])


def test_images_into_a_table_build_is_refused_naming_what_is_there(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    table_build(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as exc:
        build.images(folder, out)
    msg = str(exc.value)
    assert str(out) in msg and "a table build" in msg and "recipe.json" in msg
    assert "train/manifest.json" in msg and "--overwrite" in msg
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched


def test_overwrite_replaces_the_other_build_and_leaves_nothing_of_it(
    folder: Path, tmp_path: Path
) -> None:
    out, ref = tmp_path / "out", tmp_path / "ref"
    table_build(out)
    s = build.images(folder, out, overwrite=True)
    build.images(folder, ref)
    assert listing(out) == listing(ref)  # no recipe.json, no table shards left
    assert not (out / "recipe.json").exists()
    for name in s["counts"]:
        assert list(ShardSet(out / name, verify=True).fields) == ["image", "label"]


def test_overwrite_refuses_to_remove_files_datafuel_did_not_write(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    table_build(out)
    (out / "notes.txt").write_text("mine")
    (out / "train" / "extra.csv").write_text("a,b\n")
    before = listing(out)
    with pytest.raises(ConfigError) as exc:
        build.images(folder, out, overwrite=True)
    msg = str(exc.value)
    assert "notes.txt" in msg and "train/extra.csv" in msg and "nothing was removed" in msg
    assert listing(out) == before


def test_a_rerun_of_the_same_kind_needs_no_flag(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build.images(folder, out)
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name[0] != "."}
    build.images(folder, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name[0] != "."} == first
    (out / "notes.txt").write_text("mine")  # user files beside a build are left alone
    build.images(folder, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_every_kind_refuses_the_others(folder: Path, tmp_path: Path) -> None:
    images, text, table = tmp_path / "images", tmp_path / "text", tmp_path / "table"
    build.images(folder, images)
    build.text([sample_corpus_path()], text, vocab_size=300)
    table_build(table)
    with pytest.raises(ConfigError, match="an images build"):
        build.text([sample_corpus_path()], images, vocab_size=300)
    with pytest.raises(ConfigError, match="a text build"):
        table_build(text)
    with pytest.raises(ConfigError, match="a table build"):
        build.resample(text / "train", table, report_tokens=500)
    with pytest.raises(ConfigError, match="a text build"):
        build.images(folder, text)
    resampled = tmp_path / "resampled"
    build.resample(text / "train", resampled, report_tokens=500)
    with pytest.raises(ConfigError, match="a resample build"):
        build.images(folder, resampled)
    build.text([sample_corpus_path()], resampled, vocab_size=300, overwrite=True)
    assert not (resampled / "manifest.json").exists()
    assert json.loads((resampled / "split.json").read_text())["unit"] == "document"


def test_an_empty_or_missing_out_needs_nothing(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    build.images(folder, tmp_path / "empty", overwrite=True)
    build.images(folder, tmp_path / "new" / "deeper", overwrite=True)


def test_a_rerun_with_a_split_at_zero_leaves_no_old_rows_readable(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build.table(HOUSES, out, target="price", drop=["id"])
    assert len(ShardSet(out / "test")) > 0
    s = build.table(HOUSES, out, target="price", drop=["id"], fractions=(0.9, 0.1, 0.0), seed=1)
    assert s["counts"]["test"] == 0
    assert not (out / "test").exists()  # the first build's test rows are gone
    corpus = [sample_corpus_path()]
    build.text(corpus, tmp_path / "tok", vocab_size=300)
    build.text(corpus, tmp_path / "tok", vocab_size=300, fractions=(0.8, 0.2, 0.0))
    assert not (tmp_path / "tok" / "test").exists()


def test_overwrite_refuses_to_remove_the_tokenizer_it_was_given(tmp_path: Path) -> None:
    from datafuel.errors import ConfigError as Refused

    out = tmp_path / "tok"
    build.text([sample_corpus_path()], out, vocab_size=300)
    given = out / "tokenizer.json"
    kept = given.read_bytes()
    with pytest.raises(Refused, match="--overwrite would remove"):
        build.text([sample_corpus_path()], out, tokenizer=given, overwrite=True)
    assert given.read_bytes() == kept
    # without --overwrite the same file is used in place (no copy onto itself)
    s = build.text([sample_corpus_path()], out, tokenizer=given)
    assert s["tokenizer_trained"] is False and given.read_bytes() == kept
