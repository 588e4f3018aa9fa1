"""ShardDataset: a map-style torch Dataset over shards for torch.utils.data.DataLoader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_helpers import write_rows, write_tokens

from datafuel.errors import ConfigError, SchemaError
from datafuel.loaders import ShardDataset, ShardSet, bytes_field, fixed, write_shards


def test_rows_match_the_shard_set(tmp_path: Path) -> None:
    d = write_rows(tmp_path / "rows", n=50)
    ds = ShardDataset(d)
    ref = ShardSet(d)
    assert len(ds) == 50
    for i in (0, 7, 49, -1):
        item = ds[i]
        assert int(item["idx"]) == (i % 50)
        np.testing.assert_array_equal(item["x"].numpy(), ref[i % 50]["x"])
    with pytest.raises(IndexError, match="50"):
        ds[50]
    with pytest.raises(SchemaError, match="nope"):
        ShardDataset(d, fields=["nope"])


def test_works_with_torch_dataloader_and_workers(tmp_path: Path) -> None:
    d = write_rows(tmp_path / "rows", n=40)
    ds = ShardDataset(d, fields=["idx", "x"])
    clone = pickle.loads(pickle.dumps(ds))  # workers get a path, not open maps
    assert clone._shards is None and int(clone[3]["idx"]) == 3
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, num_workers=workers)
        got = [b["idx"] for b in dl]
        assert torch.cat(got).tolist() == list(range(40))
        assert got[0].dtype == torch.int64


def test_token_windows_and_bytes(tmp_path: Path) -> None:
    d, stream = write_tokens(tmp_path / "tok")
    ds = ShardDataset(d, seq_len=10)
    assert len(ds) == (len(stream) - 1) // 10
    np.testing.assert_array_equal(ds[3]["tokens"].numpy(), stream[30:41].astype(np.int64))
    with pytest.raises(ConfigError, match="not both"):
        ShardDataset(d, seq_len=10, fields=["tokens"])
    b = tmp_path / "bytes"
    write_shards(
        b, fields={"jpeg": bytes_field(), "y": fixed("int64")}, jpeg=[b"ab", b"c"], y=np.arange(2)
    )
    assert ShardDataset(b)[0]["jpeg"] == b"ab"
