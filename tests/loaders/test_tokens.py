from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datafuel.errors import SchemaError
from datafuel.loaders import ShardSet, ShardWriter, fixed, ragged


def write_docs(d: Path, docs: list[np.ndarray], dtype: str, shard_bytes: int) -> ShardSet:
    with ShardWriter(d, {"tokens": ragged(dtype)}, shard_bytes=shard_bytes) as w:
        w.write({"tokens": docs})
    return ShardSet(d)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("shard_bytes", [300, 1 << 30])
def test_windows_equal_the_concatenated_stream(
    tmp_path: Path, dtype: str, shard_bytes: int
) -> None:
    rng = np.random.default_rng(1)
    high = 65535 if dtype == "uint16" else 2**20
    docs = [rng.integers(0, high, size=int(n), dtype=dtype) for n in rng.integers(1, 90, size=60)]
    ds = write_docs(tmp_path, docs, dtype, shard_bytes)
    ts = ds.token_stream("tokens")
    flat = np.concatenate(docs)
    assert ts.num_tokens == flat.size and ts.num_documents == 60
    assert ts.dtype == np.dtype(dtype)
    L = 65
    assert ts.num_windows(L) == flat.size - L + 1
    starts = rng.integers(0, ts.num_windows(L), size=200)
    starts[:2] = [0, ts.num_windows(L) - 1]
    got = ts.windows(starts, L)
    assert got.shape == (200, L) and got.dtype == np.dtype(dtype)
    for j, s in enumerate(starts):
        np.testing.assert_array_equal(got[j], flat[s : s + L])
    for i in (0, 17, 59):
        np.testing.assert_array_equal(ts.document(i), docs[i])
    np.testing.assert_array_equal(
        ts.doc_starts, np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    )
    if shard_bytes == 300:
        assert ds.num_shards > 5


def test_window_out_of_range(tmp_path: Path) -> None:
    ts = write_docs(tmp_path, [np.arange(10, dtype=np.uint16)], "uint16", 1 << 20).token_stream()
    with pytest.raises(IndexError, match="out of range"):
        ts.windows([5], 6)
    assert ts.windows([4], 6).tolist() == [[4, 5, 6, 7, 8, 9]]


def test_token_stream_needs_a_ragged_integer_field(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, {"x": fixed("float32")}) as w:
        w.write({"x": np.zeros(3, np.float32)})
    with pytest.raises(SchemaError, match="token stream"):
        ShardSet(tmp_path).token_stream("x")
    with pytest.raises(SchemaError, match="no field 'tokens'"):
        ShardSet(tmp_path).token_stream("tokens")
