"""``datafuel apply`` and the column-step options of ``datafuel build table``."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
from cli_runner import Cli

from datafuel.cli._column_opts import parse_categorical
from datafuel.errors import ConfigError
from datafuel.loaders import ShardSet
from datafuel.split import split

HOUSES = str(files("datafuel") / "data" / "houses.csv")


def read_all(directory: Path, name: str) -> np.ndarray:
    return np.concatenate([b[name] for b in ShardSet(directory).iter_batches(4096)])


def test_build_with_codes_then_apply_to_the_test_rows(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, err = cli(
        "build", "table", HOUSES, "--out", str(out), "--target", "price", "--drop", "id",
        "--categorical", "neighborhood=codes", "--missing-indicators",
    )  # fmt: skip
    assert code == 0, err
    meta = ShardSet(out / "train").metadata
    assert meta["categorical"]["columns"] == ["neighborhood"]
    assert all(not c.startswith("neighborhood=") for c in meta["columns"])
    table = pacsv.read_csv(HOUSES)
    new = tmp_path / "new.csv"
    pacsv.write_csv(table.take(split(table, (0.8, 0.1, 0.1), seed=0).indices["test"]), new)
    code, text, err = cli(
        "apply", str(out / "recipe.json"), str(new), "--out", str(tmp_path / "s"), "--json"
    )
    assert code == 0, err
    summary = json.loads(text)
    assert summary["kind"] == "apply" and summary["counts"]["data"] == len(ShardSet(out / "test"))
    for name in ("x", "cat"):
        np.testing.assert_array_equal(read_all(tmp_path / "s", name), read_all(out / "test", name))
    code, text, err = cli("apply", str(out / "recipe.json"), str(new), "--out", str(tmp_path / "t"))
    assert code == 0 and text.startswith(f"wrote {tmp_path / 't'}: "), err


def test_apply_refuses_a_missing_column_in_one_line(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        cli("build", "table", HOUSES, "--out", str(out), "--target", "price", "--drop", "id")[0]
        == 0
    )
    new = tmp_path / "new.csv"
    pacsv.write_csv(pacsv.read_csv(HOUSES).drop_columns(["year_built"]), new)
    code, _, err = cli("apply", str(out / "recipe.json"), str(new), "--out", str(tmp_path / "s"))
    assert code == 1
    assert err.startswith("datafuel: error: ") and "'year_built'" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_categorical_option(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli(
        "build", "table", HOUSES, "--out", str(tmp_path / "o"), "--target", "price",
        "--drop", "id", "--categorical", "embed",
    )  # fmt: skip
    assert code == 1 and "--categorical" in err


def test_parse_categorical() -> None:
    assert parse_categorical(()) == "onehot"
    assert parse_categorical(("codes",)) == "codes"
    assert parse_categorical(("codes", "a=onehot")) == {"*": "codes", "a": "onehot"}
    with pytest.raises(ConfigError):
        parse_categorical(("=codes",))


def test_apply_keeps_the_builds_id_unless_told_otherwise(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, err = cli(
        "build", "table", HOUSES, "--out", str(out), "--target", "price", "--keep", "id"
    )
    assert code == 0, err
    recipe, scored = str(out / "recipe.json"), tmp_path / "s"
    assert cli("apply", recipe, HOUSES, "--out", str(scored))[0] == 0
    ids = read_all(scored, "id")
    assert len(np.unique(ids)) == len(ids) > 1000  # the houses' own ids, one per row written
    assert cli("apply", recipe, HOUSES, "--out", str(tmp_path / "n"), "--no-keep")[0] == 0
    assert set(ShardSet(tmp_path / "n").fields) == {"x"}
    code, _, err = cli(
        "apply", recipe, HOUSES, "--out", str(tmp_path / "b"), "--keep", "id", "--no-keep"
    )
    assert code == 2 and "contradict" in err
