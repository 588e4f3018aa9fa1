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


def test_lazy_stream_maps_shards_as_read_and_drops_them(tmp_path: Path) -> None:
    from datafuel.loaders import TokenStream

    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 60000, int(n), dtype=np.uint16) for n in rng.integers(1, 50, 80)]
    ds = write_docs(tmp_path, docs, "uint16", 300)
    eager = ds.token_stream("tokens")
    mapped: list[int] = []

    def load(k: int) -> np.ndarray:
        mapped.append(k)
        return ds._mmap(k, "tokens")[0]

    def load_offsets(k: int) -> np.ndarray:
        return ds._mmap(k, "tokens")[1]

    sizes = np.diff(eager.shard_starts)
    lazy = TokenStream(
        [b""] * ds.num_shards, None, eager.dtype, sizes=sizes, load=load, load_offsets=load_offsets
    )
    assert lazy.lazy and not eager.lazy
    np.testing.assert_array_equal(lazy.shard_starts, eager.shard_starts)
    s = int(eager.shard_starts[3]) - 4  # the last tokens of shard 2, then shard 3
    for out in (None, np.zeros((1, 10), np.int64), np.zeros((1, 10), np.float64)):
        np.testing.assert_array_equal(lazy.windows([s], 10, out=out), eager.windows([s], 10))
    assert sorted(set(mapped)) == [2, 3]
    lazy.drop(2)
    assert isinstance(lazy._data[2], bytes) and not isinstance(lazy._data[3], bytes)
    np.testing.assert_array_equal(lazy.read(s, 10), eager.read(s, 10))
    np.testing.assert_array_equal(lazy.take(np.array([s, 0])), eager.take(np.array([s, 0])))
    np.testing.assert_array_equal(lazy.doc_starts, eager.doc_starts)
    eager.drop(0)  # an eager stream never forgets a shard
    assert not isinstance(eager._data[0], bytes)


def test_windows_kernel_reports_an_unmapped_shard_and_refuses_a_short_one() -> None:
    from datafuel.loaders import _gather as G

    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    w = np.full((2, 8), -1, np.int64)
    tok = [np.arange(100, dtype=np.uint16), b""]
    assert G.windows_at(tok, i64(0, 100, 110), i64(95, 2), 8, w, 2) == (1,)
    assert (w == -1).all()  # nothing copied
    assert G.windows_at(tok, i64(0, 100, 110), i64(90, 2), 8, w, 2) is None  # shard 1 not read
    assert G.windows_at(tok, i64(0, 100, 110), i64(0, 103), 8, w, 2) == 1  # out of range first
    with pytest.raises(ValueError, match="fewer than its offsets say"):
        G.windows_at([tok[0], np.zeros(3, np.uint16)], i64(0, 100, 110), i64(95, 2), 8, w, 2)


def test_lazy_stream_maps_again_when_another_thread_mapped_first(
    tmp_path: Path, monkeypatch
) -> None:
    # the kernel finds shard k unmapped; before this thread looks, another maps it: this
    # thread must call again, not call the shard short, and not map it twice
    from datafuel.loaders import TokenStream, _tokens

    ds = write_docs(tmp_path, [np.arange(40, dtype=np.uint16)] * 10, "uint16", 200)
    eager = ds.token_stream("tokens")
    calls: list[int] = []
    lazy = TokenStream(
        [b""] * ds.num_shards,
        None,
        eager.dtype,
        sizes=np.diff(eager.shard_starts),
        load=lambda k: calls.append(k) or ds._mmap(k, "tokens")[0],
    )
    real = _tokens._gather.windows_at
    first = [True]

    def racing(srcs, *args):
        got = real(srcs, *args)
        if first[0] and isinstance(got, tuple):
            first[0] = False
            lazy._data[got[0]] = ds._mmap(got[0], "tokens")[0]  # the other worker
        return got

    monkeypatch.setattr(_tokens._gather, "windows_at", racing)
    np.testing.assert_array_equal(lazy.windows([5], 10), eager.windows([5], 10))
    assert calls == []
