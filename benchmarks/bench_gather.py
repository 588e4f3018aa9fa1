"""Random batch gather from a shard set vs a plain np.memmap vs single-thread memcpy.

    python3 benchmarks/bench_gather.py [--quick]

Same bytes in both layouts (the shard set is split into several shards; the memmap is
one flat file), data in the page cache (read once before timing), batches of random
row indices. Prints medians and two ratios: datafuel / np.memmap fancy indexing, and
datafuel gather bandwidth / single-thread memcpy bandwidth (DESIGN target >= 50%).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _timing import median_time

from datafuel.loaders import ShardSet, ShardWriter, fixed, ragged


def per_call(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call: one warm-up call, then ``repeats`` runs of 50 calls."""
    return median_time(fn, repeats, warmup=1, inner=50)[0]


def timed_all(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """``per_call`` of each, after one untimed pass over all of them: whichever ran first
    was otherwise measured ~2x slow (caches, TLB and clock not yet warm for this work)."""
    for fn in fns:
        per_call(fn, 1)
    return [per_call(fn, repeats) for fn in fns]


def bench_rows(root: Path, rows: int, width: int, batch: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, width)).astype(np.float32)  # float32 features: 4*width bytes a row
    y = rng.integers(0, 1000, size=rows)
    shard_dir = root / "rows"
    with ShardWriter(
        shard_dir, {"x": fixed("float32", (width,)), "y": fixed("int64")}, shard_bytes=32 << 20
    ) as w:
        for s in range(0, rows, 65536):
            w.write({"x": x[s : s + 65536], "y": y[s : s + 65536]})
    flat = root / "x.f32"
    x.tofile(flat)
    ds = ShardSet(shard_dir)
    mm = np.memmap(flat, dtype=np.float32, mode="r", shape=(rows, width))
    np.asarray(mm).sum()  # page cache warm
    for b in ds.iter_batches(65536, fields=["x"]):
        b["x"].sum()
    idx_sets = [rng.integers(0, rows, size=batch) for _ in range(64)]
    it = iter(range(1 << 30))
    out = {"x": np.empty((batch, width), np.float32)}

    def ours() -> None:
        ds.gather(idx_sets[next(it) % 64], fields=["x"], out=out)

    def plain() -> None:
        mm[idx_sets[next(it) % 64]]

    # memcpy of the same number of bytes from random places in a 64 MB buffer (beyond the caches)
    src = rng.normal(size=(max(4 * batch, (64 << 20) // (4 * width)), width)).astype(np.float32)
    dst = np.empty((batch, width), np.float32)
    offs = rng.integers(0, len(src) - batch, size=64)

    def memcpy() -> None:
        o = offs[next(it) % 64]
        np.copyto(dst, src[o : o + batch])

    nbytes = batch * width * 4
    t_ours, t_plain, t_copy = timed_all([ours, plain, memcpy], repeats)
    gbs = lambda t: nbytes / t / 1e9  # noqa: E731
    print(
        f"rows: {rows} x {width} float32 in {ds.num_shards} shards, batch {batch} random rows ({nbytes / 1e6:.2f} MB)"
    )
    print(f"  datafuel ShardSet.gather : {t_ours * 1e6:8.1f} us/batch  {gbs(t_ours):6.2f} GB/s")
    print(f"  np.memmap fancy index    : {t_plain * 1e6:8.1f} us/batch  {gbs(t_plain):6.2f} GB/s")
    print(f"  single-thread memcpy     : {t_copy * 1e6:8.1f} us/batch  {gbs(t_copy):6.2f} GB/s")
    print(f"  ratio datafuel / np.memmap           = {t_plain / t_ours:5.2f}x")
    print(f"  ratio datafuel bandwidth / memcpy    = {t_copy / t_ours:5.2f}  (target >= 0.50)")


def bench_tokens(root: Path, tokens: int, batch: int, seq_len: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    stream = rng.integers(0, 50257, size=tokens, dtype=np.uint16)  # uint16: GPT-2 vocabulary fits
    doc_ends = np.sort(rng.choice(tokens, size=tokens // 2000, replace=False))
    docs = np.split(stream, doc_ends)
    tok_dir = root / "tokens"
    with ShardWriter(tok_dir, {"tokens": ragged("uint16")}, shard_bytes=64 << 20) as w:
        w.write({"tokens": docs})
    flat = root / "tokens.u16"
    stream.tofile(flat)
    ts = ShardSet(tok_dir).token_stream("tokens")
    mm = np.memmap(flat, dtype=np.uint16, mode="r")
    L = seq_len + 1
    # warm as the rows case is: every page of the stream read once through its mapping
    # (else the first contender timed pays the first-touch faults of the map)
    ts.windows(np.arange(0, tokens - L, L), L).sum()
    np.asarray(mm).sum()
    starts = [rng.integers(0, tokens - L, size=batch) for _ in range(64)]
    it = iter(range(1 << 30))

    buf = np.empty((batch, L), np.uint16)

    def ours() -> None:  # into a pre-sized buffer, as the rows case and memcpy do
        ts.windows(starts[next(it) % 64], L, out=buf)

    def ours_new() -> None:  # a new array per call (malloc, first-touch page faults)
        ts.windows(starts[next(it) % 64], L)

    def nanogpt() -> None:  # nanoGPT's get_batch, minus the torch conversion
        np.stack([mm[s : s + L] for s in starts[next(it) % 64]])

    src = np.asarray(mm[: max(batch * L, 32 << 20)]).copy()  # 64 MB of uint16, beyond the caches
    dst = np.empty(batch * L, np.uint16)
    offs = rng.integers(0, len(src) - batch * L, size=64)

    def memcpy() -> None:
        o = offs[next(it) % 64]
        np.copyto(dst, src[o : o + batch * L])

    nbytes = batch * L * 2
    t_ours, t_new, t_ng, t_copy = timed_all([ours, ours_new, nanogpt, memcpy], repeats)
    print(
        f"tokens: {tokens / 1e6:.0f}M uint16 tokens in {len(ts.shard_starts) - 1} shards, batch {batch} x {L} windows ({nbytes / 1e6:.2f} MB)"
    )
    print(
        f"  datafuel TokenStream.windows : {t_ours * 1e6:8.1f} us/batch  {nbytes / t_ours / 1e9:6.2f} GB/s"
    )
    print(
        f"  the same, a new array a call  : {t_new * 1e6:8.1f} us/batch  {nbytes / t_new / 1e9:6.2f} GB/s"
    )
    print(
        f"  nanoGPT-style np.stack slices: {t_ng * 1e6:8.1f} us/batch  {nbytes / t_ng / 1e9:6.2f} GB/s"
    )
    print(
        f"  single-thread memcpy         : {t_copy * 1e6:8.1f} us/batch  {nbytes / t_copy / 1e9:6.2f} GB/s"
    )
    print(f"  ratio datafuel / nanoGPT-style      = {t_ng / t_ours:5.2f}x")
    print(f"  ratio datafuel bandwidth / memcpy   = {t_copy / t_ours:5.2f}  (target >= 0.50)")
    print(f"  ratio with a new array a call       = {t_copy / t_new:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    args = ap.parse_args()
    repeats = 5 if args.quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_rows(
            root, rows=50_000 if args.quick else 200_000, width=256, batch=256, repeats=repeats
        )
        bench_tokens(
            root,
            tokens=20_000_000 if args.quick else 100_000_000,
            batch=64,
            seq_len=1024,
            repeats=repeats,
        )


if __name__ == "__main__":
    main()
