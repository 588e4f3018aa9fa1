"""Hamming pair search: the native scan, the numpy fallback and a brute force agree."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datafuel.dedup import _phash, hamming_pairs
from datafuel.errors import ConfigError

try:
    from datafuel.dedup import _hamming
except ImportError:  # pragma: no cover - the extension did not build
    _hamming = None  # type: ignore[assignment]

native = pytest.mark.skipif(_hamming is None, reason="datafuel.dedup._hamming is not built")
KERNELS = ("generic", "popcnt", "avx2", "avx512vpopcntdq")


def brute(h: np.ndarray, md: int) -> list[tuple[int, int, int]]:
    """Every pair compared one by one, in Python."""
    v = [int(x) for x in h]
    return [
        (i, j, (v[i] ^ v[j]).bit_count())
        for i in range(len(v))
        for j in range(i + 1, len(v))
        if (v[i] ^ v[j]).bit_count() <= md
    ]


def brute_np(h: np.ndarray, md: int) -> list[tuple[int, int, int]]:
    i, j = np.triu_indices(h.size, 1)
    d = np.bitwise_count(h[i] ^ h[j])
    k = d <= md
    return list(zip(i[k].tolist(), j[k].tolist(), d[k].tolist(), strict=True))


def planted(n: int, seed: int) -> np.ndarray:
    """Random hashes with copies at distances 0..12 of earlier ones and exact duplicates."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for k, j in enumerate(rng.choice(np.arange(1, n), min(n - 1, 60), replace=False)):
        src = int(rng.integers(0, j))
        bits = rng.choice(64, k % 13, replace=False)
        flip = np.uint64(sum(1 << int(b) for b in bits))
        h[j] = h[src] ^ flip
    h[-3:] = h[0]  # three more copies of the first
    return h


def triples(r: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[int, int, int]]:
    i, j, d = r
    assert i.dtype == j.dtype == d.dtype == np.int64
    return list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_phash, "_hamming", None)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("md", [0, 3, 10, 12])
def test_native_and_numpy_match_brute_force(
    seed: int, md: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = planted(1500 + 700 * seed, seed)
    want = brute_np(h, md)
    assert len(want) >= 3  # the duplicates at least
    if seed == 0:  # the numpy reference against the plain Python one
        assert brute_np(h[:400], md) == brute(h[:400], md)
    got = triples(hamming_pairs(h, md))
    monkeypatch.setattr(_phash, "_hamming", None)
    slow = triples(hamming_pairs(h, md, block=333))
    assert got == want
    assert slow == want


@native
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_matches_brute_force(kernel: str) -> None:
    """Each popcount kernel the CPU has (the others fall back to the best below them)."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from datafuel.dedup import _hamming
        h = np.load(sys.argv[1])
        print(_hamming.kernel())
        for md in (0, 5, 12, 40, 64):
            i, j, d = _hamming.pairs(h, md, 0, h.size)
            np.save(f"{sys.argv[1]}.{md}.npy", np.stack([
                np.frombuffer(i, np.int64), np.frombuffer(j, np.int64),
                np.frombuffer(d, np.uint8).astype(np.int64)]))
        """
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h.npy")
        h = planted(611, 5)  # not a multiple of 4, 8 or 16: the tails are scanned
        np.save(path, h)
        env = {**os.environ, "DATAFUEL_HAMMING_KERNEL": kernel}
        out = subprocess.run(
            [sys.executable, "-c", code, path], env=env, capture_output=True, text=True, check=True
        )
        used = out.stdout.strip()
        assert used in KERNELS
        if used != kernel:
            assert KERNELS.index(used) < KERNELS.index(kernel)  # the CPU lacks it
        for md in (0, 5, 12, 40, 64):
            got = np.load(f"{path}.{md}.npy")
            assert [tuple(t) for t in got.T.tolist()] == brute_np(h, md), (used, md)


@pytest.mark.parametrize("impl", ["native", "numpy"])
def test_edge_cases(impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if impl == "numpy":
        monkeypatch.setattr(_phash, "_hamming", None)
    elif _hamming is None:
        pytest.skip("datafuel.dedup._hamming is not built")
    for n in (0, 1):
        assert triples(hamming_pairs(np.zeros(n, np.uint64), 64)) == []
    assert triples(hamming_pairs([], 10)) == []
    two = np.array([0, 2**64 - 1], np.uint64)
    assert triples(hamming_pairs(two, 63)) == []
    assert triples(hamming_pairs(two, 64)) == [(0, 1, 64)]
    assert triples(hamming_pairs(two[::-1].copy(), 64)) == [(0, 1, 64)]
    assert triples(hamming_pairs(np.array([7, 7], np.uint64), 0)) == [(0, 1, 0)]
    assert triples(hamming_pairs(np.array([7, 6], np.uint64), 0)) == []
    n = 157
    same = np.full(n, 0xDEADBEEF, np.uint64)
    i, j, d = hamming_pairs(same, 0, block=50)
    assert i.size == n * (n - 1) // 2
    assert triples((i, j, d)) == [(a, b, 0) for a in range(n) for b in range(a + 1, n)]
    h = planted(300, 9)
    assert triples(hamming_pairs(h, 64)) == brute_np(h, 64)  # every pair
    # int64 hashes are read as their bits; lists of Python ints too
    assert triples(hamming_pairs(h.view(np.int64), 12)) == brute_np(h, 12)
    assert triples(hamming_pairs([int(x) for x in h[:50]], 12)) == brute_np(h[:50], 12)
    # a strided view is made contiguous first
    assert triples(hamming_pairs(h[::2], 12)) == brute_np(h[::2].copy(), 12)


@native
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_thread_splits_give_the_same_pairs(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_phash, "_POOL_PAIRS", 0)  # a pool even for small inputs
    h = planted(2500, 3)
    want = brute_np(h, 12)
    assert triples(hamming_pairs(h, 12, threads=threads)) == want
    same = np.zeros(200, np.uint64)
    assert len(triples(hamming_pairs(same, 0, threads=threads))) == 200 * 199 // 2


@native
def test_the_scan_releases_the_gil() -> None:
    """The main thread keeps running while another scans (it would stall for the whole
    call if the GIL were held)."""
    import threading
    import time

    h = np.random.default_rng(0).integers(0, 2**63, 100_000, dtype=np.uint64)
    t0 = time.perf_counter()
    _hamming.pairs(h, 10, 0, h.size)
    alone = time.perf_counter() - t0  # 0.25 s with AVX-512, 2 s with POPCNT
    worker = threading.Thread(target=_hamming.pairs, args=(h, 10, 0, h.size))
    gap, last = 0.0, time.perf_counter()
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    worker.join()
    assert gap < 0.5 * alone, (gap, alone)


@pytest.mark.parametrize("n", [2, 3, 10, 1000, 12345])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 16, 64])
def test_row_ranges_cover_the_triangle_evenly(n: int, parts: int) -> None:
    ranges = _phash._row_ranges(n, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(s < e for s, e in ranges)
    work = [sum(n - 1 - i for i in range(s, e)) for s, e in ranges]
    total = n * (n - 1) // 2
    if n >= 1000:
        assert max(work) <= total / parts + n  # within one row of even
        assert len(ranges) == parts


@native
def test_ranges_concatenate_to_the_whole() -> None:
    h = planted(900, 4)
    whole = _hamming.pairs(h, 12, 0, h.size)
    parts = [_hamming.pairs(h, 12, s, e) for s, e in ((0, 0), (0, 1), (1, 400), (400, 900))]
    for k in range(3):
        assert bytes(whole[k]) == b"".join(bytes(p[k]) for p in parts)


@native
def test_cross_matches_brute_force() -> None:
    a, b = planted(700, 6), planted(333, 7)
    b[:20] = a[100:120] ^ np.uint64(0b101)  # 2 bits from a[100:120]
    i, j, d = _hamming.cross(a, b, 12)
    ii, jj = np.meshgrid(np.arange(a.size), np.arange(b.size), indexing="ij")
    dd = np.bitwise_count(a[ii] ^ b[jj])
    k = dd <= 12
    assert np.array_equal(np.frombuffer(i, np.int64), ii[k])
    assert np.array_equal(np.frombuffer(j, np.int64), jj[k])
    assert np.array_equal(np.frombuffer(d, np.uint8), dd[k])
    assert np.frombuffer(i, np.int64).size >= 20
    assert [bytes(x) for x in _hamming.cross(a[:0], b, 3)] == [b""] * 3


@pytest.mark.parametrize(
    ("hashes", "md", "match"),
    [
        (np.zeros((3, 2), np.uint64), 3, "1-D"),
        (np.zeros(4, np.float64), 3, "float64"),
        (np.array(["a", "b"]), 3, "dtype"),
        (np.zeros(4, bool), 3, "bool"),
        ([1, -5, 3], 3, "cannot convert"),
        ([1, 2**64, 3], 3, "cannot convert"),
        (np.zeros(4, np.uint64), -1, "max_distance"),
        (np.zeros(4, np.uint64), 65, "max_distance"),
        (np.zeros(4, np.uint64), 2.0, "max_distance"),
        (np.zeros(4, np.uint64), True, "max_distance"),
    ],
)
def test_bad_arguments_raise_config_error(hashes: object, md: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        hamming_pairs(hashes, md)  # type: ignore[arg-type]


def test_bad_block_and_threads_raise() -> None:
    h = np.zeros(4, np.uint64)
    with pytest.raises(ConfigError, match="block"):
        hamming_pairs(h, 3, block=0)
    with pytest.raises(ConfigError, match="threads"):
        hamming_pairs(h, 3, threads=0)
    with pytest.raises(ValueError, match="max_distance"):  # ConfigError is a ValueError
        hamming_pairs(h, 99)


@native
def test_native_refuses_bad_buffers() -> None:
    h = np.zeros(10, np.uint64)
    with pytest.raises(ValueError, match="64-bit"):
        _hamming.pairs(np.zeros(10, np.float64), 3, 0, 10)
    with pytest.raises(ValueError, match="64-bit"):
        _hamming.pairs(np.zeros(10, np.uint32), 3, 0, 5)
    with pytest.raises((ValueError, BufferError)):
        _hamming.pairs(np.zeros((10, 2), np.uint64)[:, 0], 3, 0, 10)
    with pytest.raises(TypeError):
        _hamming.pairs(object(), 3, 0, 10)
    for r0, r1 in ((-1, 5), (5, 4), (0, 11)):
        with pytest.raises(ValueError, match="row_start"):
            _hamming.pairs(h, 3, r0, r1)
    for md in (-1, 65):
        with pytest.raises(ValueError, match="max_distance"):
            _hamming.pairs(h, md, 0, 10)
        with pytest.raises(ValueError, match="max_distance"):
            _hamming.cross(h, h, md)
    with pytest.raises(ValueError, match="b must"):
        _hamming.cross(h, np.zeros(3, np.int32), 3)


PEAK = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from datafuel.dedup import _phash, hamming_pairs
    if sys.argv[2] == "numpy":
        _phash._hamming = None
    n = int(sys.argv[1])
    h = np.random.default_rng(0).integers(0, 2**63, n, dtype=np.uint64)
    h[n - 1] = h[7] ^ np.uint64(0b111)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    i, j, d = hamming_pairs(h, 3)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (7, n - 1, 3) in set(zip(i.tolist(), j.tolist(), d.tolist())), (i, j, d)
    print((after - before) / 1024)
    """
)


@pytest.mark.parametrize(
    ("impl", "n"),
    [
        pytest.param("native", 200_000, marks=native),
        # the old blocks would take 2048 x 30,000 x 8 = 490 MB; tiles take 38 MB
        pytest.param("numpy", 30_000, marks=pytest.mark.slow),
    ],
)
def test_peak_memory_is_small(impl: str, n: int) -> None:
    """200,000 hashes: the old 2048-row blocks needed 3.2 GB each; now the pairs found."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(n), impl], capture_output=True, text=True, check=True
    )
    assert float(out.stdout.strip()) < 200, out.stdout
