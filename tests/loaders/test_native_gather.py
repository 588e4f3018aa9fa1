"""The native gather (``loaders._gather``): rows and token windows from several shards
straight into batch order, equal to the numpy path, and refusing bad indices."""

from __future__ import annotations

import numpy as np
import pytest

import datafuel.loaders._reader as reader_mod
import datafuel.loaders._tokens as tokens_mod
from datafuel.loaders import ShardSet, ShardWriter, fixed, ragged

G = pytest.importorskip("datafuel.loaders._gather", reason="the C extension did not build")


@pytest.fixture
def rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 7, 3)).astype(np.float32)
    y = rng.integers(0, 10**9, 5000)
    b = rng.integers(0, 255, (5000, 5), dtype=np.uint8)
    with ShardWriter(
        tmp_path / "r",
        {"x": fixed("float32", (7, 3)), "y": fixed("int64"), "b": fixed("uint8", (5,))},
        shard_bytes=20_000,
    ) as w:
        for s in range(0, 5000, 300):
            w.write({"x": x[s : s + 300], "y": y[s : s + 300], "b": b[s : s + 300]})
    ds = ShardSet(tmp_path / "r")
    assert ds.num_shards > 10
    return ds, x, y, b


def test_random_rows_from_many_shards_equal_the_numpy_path(rows, monkeypatch) -> None:
    ds, x, y, b = rows
    rng = np.random.default_rng(1)
    for idx in (rng.integers(0, 5000, 257), np.sort(rng.integers(0, 5000, 64)), [4999, 0, -1]):
        got = ds.gather(idx)
        np.testing.assert_array_equal(got["x"], x[idx])
        np.testing.assert_array_equal(got["y"], y[idx])
        np.testing.assert_array_equal(got["b"], b[idx])
    out = {"x": np.zeros((257, 7, 3), np.float32)}
    idx = rng.integers(0, 5000, 257)
    assert ds.gather(idx, fields=["x"], out=out)["x"] is out["x"]
    np.testing.assert_array_equal(out["x"], x[idx])
    # a strided out buffer still gets the rows (numpy writes through strides)
    wide = np.zeros((257, 7, 6), np.float32)
    strided = wide[:, :, ::2]
    ds.gather(idx, fields=["x"], out={"x": strided})
    np.testing.assert_array_equal(strided, x[idx])
    monkeypatch.setattr(reader_mod, "_gather", None)
    np.testing.assert_array_equal(ds.gather(idx)["x"], x[idx])


def test_token_windows_across_shards_widened(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(2)
    docs = [rng.integers(0, 60000, rng.integers(50, 400), dtype=np.uint16) for _ in range(300)]
    with ShardWriter(tmp_path / "t", {"tokens": ragged("uint16")}, shard_bytes=8_000) as w:
        w.write({"tokens": docs})
    ts = ShardSet(tmp_path / "t").token_stream("tokens")
    flat = np.concatenate(docs)
    assert len(ts.shard_starts) > 5
    L = 33
    # windows inside shards (the native path) and some across a boundary
    bounds = ts.shard_starts[1:-1]
    inside = np.array(
        [s for s in rng.integers(0, len(flat) - L, 400) if not any(b - L < s < b for b in bounds)]
    )
    for dtype in (np.uint16, np.int64, np.int32):
        out = np.zeros((inside.size, L), dtype)
        ts.windows(inside, L, out=out)
        np.testing.assert_array_equal(out, np.stack([flat[s : s + L] for s in inside]))
    across = np.concatenate([inside[:5], bounds[:3] - 5])
    np.testing.assert_array_equal(
        ts.windows(across, L), np.stack([flat[s : s + L] for s in across])
    )
    monkeypatch.setattr(tokens_mod, "_gather", None)
    np.testing.assert_array_equal(
        ts.windows(inside, L), np.stack([flat[s : s + L] for s in inside])
    )


def test_rows_at_maps_only_the_shards_a_batch_reads(rows) -> None:
    ds, x, _, _ = rows
    fresh = ShardSet(ds.directory)
    idx = np.array([3, 4990, 7, -1], np.int64)  # two shards at the ends, and -1 = 4999
    got = fresh.gather(idx, fields=["x"])
    np.testing.assert_array_equal(got["x"], x[idx])
    _, mapped = fresh._srcs["x"]
    assert mapped.sum() == 2 and mapped[0] and mapped[-1]


def test_rows_at_out_of_range_names_the_index_and_the_set(rows) -> None:
    ds, _, _, _ = rows
    out = {"x": np.full((3, 7, 3), 7.0, np.float32)}
    for bad in (5000, -5001):
        with pytest.raises(
            IndexError, match=rf"sample index {bad} is out of range for .* 5000 rows"
        ):
            ds.gather(np.array([0, bad, 1]), fields=["x"], out=out)
        assert (out["x"] == 7.0).all()  # nothing copied before the check


def test_windows_longer_than_a_shard_cross_several(tmp_path) -> None:
    rng = np.random.default_rng(4)
    docs = [rng.integers(0, 60000, rng.integers(5, 40), dtype=np.uint16) for _ in range(400)]
    with ShardWriter(tmp_path / "t", {"tokens": ragged("uint16")}, shard_bytes=300) as w:
        w.write({"tokens": docs})
    ts = ShardSet(tmp_path / "t").token_stream("tokens")
    flat = np.concatenate(docs)
    sizes = np.diff(ts.shard_starts)
    L = int(sizes.max()) * 3  # every window spans at least three shards
    st = rng.integers(0, len(flat) - L, 50)
    for dtype in (np.uint16, np.int64):
        out = np.zeros((st.size, L), dtype)
        ts.windows(st, L, out=out)
        np.testing.assert_array_equal(out, np.stack([flat[s : s + L] for s in st]))
    with pytest.raises(IndexError, match="window start out of range"):
        ts.windows([0, len(flat) - L + 1], L)


def _bad_global_calls():
    src = [np.zeros((10, 4), np.float32), np.zeros((3, 4), np.float32)]
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    out = np.zeros((2, 4), np.float32)
    yield G.rows_at, (src, i64(0, 10), i64(0, 1), 16, out)  # offsets short of one entry
    yield G.rows_at, (src, i64(1, 10, 13), i64(0, 1), 16, out)  # not from 0
    yield G.rows_at, (src, i64(0, 10, 5), i64(0, 1), 16, out)  # decreasing
    yield G.rows_at, (src, i64(0, 10, 13), i64(0, 1), 32, out)  # out too small
    yield G.rows_at, (src, i64(0, 10, 13), np.array([0, 1], np.int32), 16, out)
    tok = [np.zeros(100, np.uint16), np.zeros(10, np.uint16)]
    w = np.zeros((2, 8), np.int64)
    yield G.windows_at, (tok, i64(0, 100, 130), i64(0, 105), 8, w, 2)  # shard 1 holds 10
    yield G.windows_at, (tok, i64(0, 100, 110), i64(0, 1), 8, np.zeros((2, 8), np.uint8), 2)
    yield G.windows_at, (tok, i64(0, 100, 110), i64(0, 1), 8, w, 3)
    yield G.windows_at, (tok, i64(0, 100), i64(0, 1), 8, w, 2)


@pytest.mark.parametrize("fn,args", list(_bad_global_calls()))
def test_bad_global_calls_raise_and_write_nothing(fn, args) -> None:
    out = args[4]
    before = out.copy()
    with pytest.raises(ValueError):
        fn(*args)
    np.testing.assert_array_equal(out, before)


def test_global_kernels_report_out_of_range_and_unmapped_shards() -> None:
    src = [np.arange(40, dtype=np.float32).reshape(10, 4), b""]
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    off = i64(0, 10, 13)
    out = np.full((3, 4), -1.0, np.float32)
    assert G.rows_at(src, off, i64(0, 13, 1), 16, out) == 1  # position of the bad index
    assert G.rows_at(src, off, i64(0, 11, 1), 16, out) == (1,)  # shard 1: map it, call again
    assert (out == -1.0).all()
    assert G.rows_at(src, off, i64(-13, 9, 2), 16, out) is None
    np.testing.assert_array_equal(out, src[0][[0, 9, 2]])
    tok = [np.arange(100, dtype=np.uint16), np.arange(100, 110, dtype=np.uint16)]
    w = np.zeros((2, 8), np.int64)
    assert G.windows_at(tok, i64(0, 100, 110), i64(0, 103), 8, w, 2) == 1
    assert G.windows_at(tok, i64(0, 100, 110), i64(95, 102), 8, w, 2) is None
    np.testing.assert_array_equal(w, [np.arange(95, 103), np.arange(102, 110)])


def test_two_threads_mapping_the_same_shard_at_once_both_succeed(rows, monkeypatch) -> None:
    # thread A and thread B both find shard k unmapped; A maps it while B is between
    # rows_at's answer and its check: B must call again, not call the shard short
    import threading
    import time
    import types

    ds, x, _, _ = rows
    real = G.rows_at
    both = threading.Barrier(2)

    def rows_at(*args):
        status = real(*args)
        if isinstance(status, tuple):  # both threads see the shard unmapped, then one maps it
            both.wait(timeout=5)
            if threading.current_thread().name == "b":
                time.sleep(0.05)
        return status

    monkeypatch.setattr(reader_mod, "_gather", types.SimpleNamespace(rows_at=rows_at))
    idx = np.arange(10, 20)
    got: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            got[name] = ds.gather(idx, ["x"])["x"]
        except Exception as exc:
            got[name] = exc

    threads = [threading.Thread(target=run, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert isinstance(got[name], np.ndarray), got[name]
        np.testing.assert_array_equal(got[name], x[idx])


# -- document_fields: position_ids, loss_mask, cu_seqlens of token windows ------------------
def _doc_args(**change):
    """A valid call (boundaries 5, 9, 20 of a 40-token stream; windows of T = 8), changed."""
    a = {
        "boundaries": np.array([5, 9, 20], np.int64),
        "starts": np.array([0, 12, 31], np.int64),
        "seq_len": 8,
        "total": 40,
        "positions": np.full((3, 8), -7, np.int64),
        "mask": np.zeros((3, 8), bool),
        "cu_seqlens": np.full(3 * 3 + 1, -7, np.int32),
    }
    a.update(change)
    return a


def test_document_fields_one_pass() -> None:
    a = _doc_args()
    assert G.document_fields(*a.values()) == 8  # the longest segment
    # window 0: cut at 5 (inputs 0..7); window 12: cut at 20 = s + T (last target
    # crosses); window 31: no boundary
    np.testing.assert_array_equal(
        a["positions"], [[0, 1, 2, 3, 4, 0, 1, 2], np.arange(8), np.arange(8)]
    )
    np.testing.assert_array_equal(a["mask"], [[1, 1, 1, 1, 0, 1, 1, 1], [1] * 7 + [0], [1] * 8])
    assert a["cu_seqlens"].tolist() == [0, 5, 8, 16] + [24] * 6


def _bad_document_calls():
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    yield _doc_args(boundaries=i64(5, 3, 20))  # out of order where window 0 reads
    yield _doc_args(boundaries=i64(5, 6, 6, 20))  # repeated
    yield _doc_args(boundaries=i64(5, 9, 17, 14, 20))  # inside window 12
    yield _doc_args(boundaries=i64(5, 9, 13, 12, 20))  # around window 12's start
    yield _doc_args(boundaries=i64(0, 9, 20))  # not inside (0, total)
    yield _doc_args(boundaries=i64(5, 9, 40))
    yield _doc_args(boundaries=np.array([5, 9, 20], np.int32))
    yield _doc_args(starts=i64(0, 12, 32))  # the window would run past the stream
    yield _doc_args(starts=i64(-1, 12, 31))
    yield _doc_args(starts=np.array([0, 12, 31], np.uint64))
    yield _doc_args(seq_len=0)
    yield _doc_args(total=-1)
    yield _doc_args(positions=np.full((3, 7), -7, np.int64))  # too small
    yield _doc_args(positions=np.full((3, 8), -7, np.int32))
    yield _doc_args(positions=np.full((3, 8), -7.0))
    yield _doc_args(mask=np.zeros((3, 7), bool))
    yield _doc_args(mask=np.zeros((3, 8), np.int16))
    yield _doc_args(cu_seqlens=np.full(4, -7, np.int32))  # 5 segments need 6 entries
    yield _doc_args(cu_seqlens=np.full(10, -7, np.int64))
    ro = np.full((3, 8), -7, np.int64)
    ro.flags.writeable = False
    yield _doc_args(positions=ro)
    big = np.zeros(2, np.int64)
    yield _doc_args(starts=big, seq_len=2**30, total=2**40)  # n * T past int32


@pytest.mark.parametrize("args", list(_bad_document_calls()))
def test_bad_document_calls_raise_and_write_nothing(args) -> None:
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises((ValueError, TypeError, BufferError)):
        G.document_fields(*args.values())
    for k, v in before.items():
        np.testing.assert_array_equal(args[k], v, err_msg=k)


def test_document_fields_check_the_order_only_where_a_batch_reads() -> None:
    # boundaries are searched, not scanned: disorder between entries no window reads is
    # not seen (the loader's boundaries are sorted by construction); the call stays
    # inside its buffers and answers as for the entries it read
    a = _doc_args(boundaries=np.array([5, 9, 20, 3], np.int64))
    assert G.document_fields(*a.values()) == 8
    np.testing.assert_array_equal(a["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])


def test_document_fields_of_an_empty_batch() -> None:
    cu = np.full(1, -7, np.int32)
    a = _doc_args(
        starts=np.zeros(0, np.int64),
        positions=np.zeros((0, 8), np.int64),
        mask=np.zeros((0, 8), bool),
        cu_seqlens=cu,
    )
    assert G.document_fields(*a.values()) == 0
    assert cu.tolist() == [0]


# -- windows_at with fields: the windows and their document fields in one call -------------
def _fused(**change):
    """The stream of _doc_args (40 tokens, boundaries 5, 9, 20) in shards of 25 and 15."""
    a = _doc_args(**change)
    flat = np.arange(1000, 1040, dtype=np.uint16)
    toks = [flat[:25], flat[25:]]
    off = np.array([0, 25, 40], np.int64)
    out = np.full((a["starts"].size, a["seq_len"] + 1), -7, np.int64)
    mx = np.full((), -7, np.int32)
    fields = (a["boundaries"], a["positions"], a["mask"], a["cu_seqlens"], mx)
    return a, (toks, off, a["starts"], a["seq_len"] + 1, out, 2, fields), flat


def test_windows_at_with_fields_equals_the_two_calls() -> None:
    a, args, flat = _fused()
    assert G.windows_at(*args) is None
    out, mx = args[4], args[6][4]
    np.testing.assert_array_equal(out, [flat[s : s + 9] for s in a["starts"]])  # across shards
    b = _doc_args()
    assert int(mx) == G.document_fields(*b.values()) == 8
    for k in ("positions", "mask", "cu_seqlens"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_windows_at_with_fields_keeps_the_status_answers() -> None:
    # a start out of range, or an unmapped shard, is answered as without fields, and
    # nothing is written (the fields neither)
    a, args, _ = _fused(
        starts=np.array([0, 32], np.int64),
        positions=np.full((2, 8), -7, np.int64),
        mask=np.zeros((2, 8), bool),
    )
    assert G.windows_at(*args) == 1
    assert (args[4] == -7).all() and (a["positions"] == -7).all()
    a, args, _ = _fused()
    args = ([args[0][0], b""], *args[1:])
    assert G.windows_at(*args) == (1,)
    assert (args[4] == -7).all() and (a["positions"] == -7).all() and (a["cu_seqlens"] == -7).all()


def _bad_fused_calls():
    for bad in _bad_document_calls():
        if bad["seq_len"] != 8 or bad["total"] != 40 or bad["starts"].dtype != np.int64:
            continue  # length, total and starts come from the windows' own arguments there
        if bad["starts"].tolist() != [0, 12, 31]:
            continue
        yield bad, None
    a = _doc_args()
    for mx in (np.zeros((), np.int64), np.zeros(0, np.int32)):
        yield a, mx
    ro = np.zeros((), np.int32)
    ro.flags.writeable = False
    yield a, ro


@pytest.mark.parametrize("change,mx", list(_bad_fused_calls()))
def test_bad_fields_raise_and_write_nothing(change, mx) -> None:
    a, args, _ = _fused(**{k: v for k, v in change.items() if k != "starts"})
    if mx is not None:
        args = (*args[:6], (*args[6][:4], mx))
    before = {k: v.copy() for k, v in a.items() if isinstance(v, np.ndarray)}
    out_before = args[4].copy()
    with pytest.raises((ValueError, TypeError, BufferError)):
        G.windows_at(*args)
    np.testing.assert_array_equal(args[4], out_before)  # the windows neither
    for k, v in before.items():
        np.testing.assert_array_equal(a[k], v, err_msg=k)


@pytest.mark.parametrize("fields", [7, [1, 2, 3, 4, 5], (1, 2, 3, 4)], ids=["int", "list", "four"])
def test_fields_must_be_a_tuple_of_five(fields) -> None:
    _, args, _ = _fused()
    with pytest.raises(TypeError):
        G.windows_at(*args[:6], fields)
    assert G.windows_at(*args[:6], None) is None  # None: the windows alone
