"""``datafuel build table`` end to end, its reproducibility, and every bad input."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from cli_runner import Cli

import datafuel
import datafuel.build
from datafuel.loaders import ShardSet

SAMPLE = str(files("datafuel") / "data" / "houses.csv")
PRICES = pacsv.read_csv(SAMPLE).column("price").to_numpy()


def test_sample_end_to_end_and_training(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text, err = cli(
        "build", "table", SAMPLE, "--out", str(out), "--target", "price", "--drop", "id", "--json"
    )
    assert code == 0, err
    summary = json.loads(text)
    assert summary["counts"]["train"] > 1500 and summary["counts"]["val"] > 150
    split = json.loads((out / "split.json").read_text())
    assert split["method"] == "random" and split["total"] == 2000
    recipe = json.loads((out / "recipe.json").read_text())
    assert [s["class"] for s in recipe["steps"]] == [
        "DropSparseRows",
        "KNNImputer",
        "Winsorizer",
        "StandardScaler",
    ]
    cap = recipe["target_steps"][0]["fitted"]["upper_caps_"]["data"][0]
    assert cap < 5e6  # the $999,000,000 typo is capped
    columns = None
    for name in ("train", "val", "test"):
        ds = ShardSet(out / name, verify=True)
        x = np.concatenate([b["x"] for b in ds.iter_batches(512)])
        y = np.concatenate([b["y"] for b in ds.iter_batches(512)])
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert np.isfinite(x).all()
        if name == "train":
            assert y.max() <= cap and summary["clipped_train_targets"] > 0
        else:  # val and test targets are the source prices, not clipped
            rows = [
                r for v in split["rows"][name] for r in ([v] if isinstance(v, int) else range(*v))
            ]
            assert np.array_equal(y, PRICES[rows].astype(np.float32))
        assert ds.provenance["recipe_fingerprint"] == summary["recipe_fingerprint"]
        columns = ds.metadata["columns"]
    assert columns is not None and "neighborhood=hills" in columns and "id" not in columns
    # a real (tiny) training loop on the train shards
    ds = ShardSet(out / "train")
    torch.manual_seed(0)
    model = torch.nn.Linear(len(columns), 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ys = np.concatenate([b["y"] for b in ds.iter_batches(512)])
    mu, sd = ys.mean(), ys.std()
    losses = []
    for _ in range(8):
        for b in ds.iter_batches(128):
            pred = model(torch.from_numpy(np.ascontiguousarray(b["x"]))).squeeze(1)
            loss = torch.nn.functional.mse_loss(pred, torch.from_numpy((b["y"] - mu) / sd))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_same_arguments_same_bytes(cli: Cli, tmp_path: Path) -> None:
    args = [SAMPLE, "--target", "price", "--drop", "id", "--seed", "3", "--split-key", "id"]
    for d in ("a", "b"):
        assert cli("build", "table", *args, "--out", str(tmp_path / d))[0] == 0
    assert cli("build", "table", *args, "--out", str(tmp_path / "a"))[0] == 0  # rerun in place
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    files_b = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert files_a == files_b and len(files_a) > 8
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_no_leakage_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli(
        "build",
        "table",
        SAMPLE,
        "--out",
        str(tmp_path),
        "--target",
        "price",
        "--drop",
        "id",
        "--drop",
        "neighborhood",
        "--impute",
        "mean",
        "--winsorize",
        "none",
        "--max-missing",
        "1",
    )
    assert code == 0, err
    table = datafuel.build.read_table(SAMPLE).drop_columns(["id", "neighborhood"])
    train = datafuel.split(table, seed=0).train.drop_columns(["price"])
    means = [np.nanmean(c.to_numpy(zero_copy_only=False).astype(float)) for c in train.columns]
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    np.testing.assert_allclose(
        recipe["steps"][1]["fitted"]["statistics_"]["data"], means, rtol=1e-13
    )


def write_parts(d: Path) -> None:
    rng = np.random.default_rng(0)
    d.mkdir()
    for k in range(3):
        n = 80
        cols = {
            "id": pa.array(np.arange(k * n, (k + 1) * n)),
            "price": pa.array(rng.normal(5e5, 1e5, n)),
            "sqft": pa.array(rng.normal(1500, 300, n)),
            # int in one part, float with nulls in another: unified on read
            "bedrooms": pa.array(rng.integers(1, 5, n))
            if k == 0
            else pa.array(
                np.where(rng.random(n) < 0.1, np.nan, rng.integers(1, 5, n)), from_pandas=True
            ),
            "location.lat": pa.array(
                np.where(rng.random(n) < 0.1, np.nan, rng.normal(37.7, 0.1, n)), from_pandas=True
            ),
        }
        if k == 2:
            cols["year_built"] = pa.array(
                rng.integers(1950, 2020, n).astype(float)
            )  # only in one part
        pq.write_table(pa.table(cols), d / f"part-{k:05d}.parquet")
    (d / "_state.json").write_text("{}")
    (d / "_drift.jsonl").write_text("")


def test_parquet_parts_directory(cli: Cli, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    write_parts(parts)
    out = tmp_path / "out"
    code, text, err = cli(
        "build",
        "table",
        str(parts),
        "--out",
        str(out),
        "--target",
        "price",
        "--drop",
        "id",
        "--impute",
        "median",
        "--scale",
        "minmax",
        "--split",
        "0.7,0.15,0.15",
        "--max-missing",
        "1",
    )
    assert code == 0, err
    ds = ShardSet(out / "train")
    assert ds.metadata["columns"] == ["sqft", "bedrooms", "location.lat", "year_built"]
    total = sum(len(ShardSet(out / n)) for n in ("train", "val", "test"))
    assert total == 240 and "MinMaxScaler" in text


def test_group_split_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    rng = np.random.default_rng(1)
    lines = ["user,x,y"] + [
        f"{u},{rng.normal():.4f},{rng.normal():.4f}" for u in rng.integers(0, 60, 600)
    ]
    csv.write_text("\n".join(lines) + "\n")
    code, _, err = cli(
        "build",
        "table",
        str(csv),
        "--out",
        str(tmp_path / "o"),
        "--target",
        "y",
        "--split-by",
        "user",
    )
    assert code == 0, err
    split = json.loads((tmp_path / "o" / "split.json").read_text())
    assert split["method"] == "group" and split["column"] == "user"
    assert ShardSet(tmp_path / "o" / "train").metadata["columns"] == [
        "x"
    ]  # the group is no feature


BAD = {
    "empty.csv": ("", [], "empty"),
    "allnan.csv": ("a,b,y\n1,,1\n2,,2\n3,,3\n", [], "'b'"),
    "nan_target.csv": ("a,y\n1,1\n2,\n3,3\n", [], "'y'"),
    "fractions.csv": ("a,y\n1,1\n2,2\n3,3\n", ["--split", "0.8,0.1,0.2"], "sum to 1"),
    "group.csv": ("a,y\n1,1\n2,2\n3,3\n", ["--split-by", "team"], "'team'"),
    "small.csv": ("a,y\n1,1\n2,2\n3,3\n", [], "train split has 1 row"),
    "strings.csv": ("sqft,y\n1200,1\n1300,2\nn/a?,3\n1400,4\n", [], "'sqft'"),
    "wide_text.csv": (
        "name,a,y\n" + "".join(f"n{i},{i * 7 % 30},{i}\n" for i in range(30)),
        [],
        "'name'",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_clear_line(cli: Cli, tmp_path: Path, name: str) -> None:
    text, extra, expected = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    code, _, err = cli(
        "build", "table", str(path), "--out", str(tmp_path / "o"), "--target", "y", *extra
    )
    assert code == 1
    assert err.startswith("datafuel: error:") and expected in err, err
    assert err.count("\n") == 1
    if name in ("empty.csv", "allnan.csv", "nan_target.csv"):
        assert name in err or "'" in err


def test_missing_input_and_unknown_drop(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("build", "table", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o"))
    assert code == 1 and "nope.csv" in err
    code, _, err = cli("build", "table", SAMPLE, "--out", str(tmp_path / "o"), "--drop", "zip")
    assert code == 1 and "'zip'" in err
