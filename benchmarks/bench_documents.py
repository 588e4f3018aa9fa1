"""Cost of document fields: ``Loader(seq_len=T, documents=True)`` against plain windows.

    python3 benchmarks/bench_documents.py [--quick]

Same shard set, same seed, same windows for every contender, page cache warm:

(a) ``Loader(seq_len=T)``: batches ``{tokens: int64 (B, T + 1)}``;
(b) ``Loader(seq_len=T, documents=True)``: the same windows plus ``position_ids``,
    ``cu_seqlens``, ``max_seqlen`` and ``loss_mask``;
(c) ``Loader(seq_len=T, documents="pack")`` for reference (other windows: whole
    documents packed best-fit, with its padding fraction).

Measured in alternating rounds (shared-machine noise hits all alike), each round a
fixed number of batches after 8 untimed ones; the figure is the median over rounds.
The overhead target is <= 3% of plain windows' throughput. Also printed: the fields'
own cost per batch in one thread (``document_fields``: the C kernel and the numpy
path) beside the token gather, the memory roofline for the fields' bytes (a memset and
an ``np.copyto`` of as many bytes: ``position_ids`` alone is as large as the widened
tokens, so writing it costs about what the gather's writes do), and both loaders beside
a simulated training step (``--step-ms``, a sleep), where what matters is whether the
loop waits.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _timing import median_time

import datafuel.loaders._windows as windows_mod
from datafuel.loaders import Loader, ShardWriter, ragged

T = 1024  # context length: windows of T + 1 tokens
B = 64


def make_corpus(root: Path, n_tokens: int) -> tuple[Path, float]:
    """Documents with Zipf-like lengths (mean ~700 tokens, many short, a long tail)."""
    rng = np.random.default_rng(0)
    lens: list[int] = []
    total = 0
    while total < n_tokens:
        n = int(min(rng.zipf(1.6) * 60 + rng.integers(1, 60), 30000))
        lens.append(n)
        total += n
    flat = rng.integers(0, 50257, size=total, dtype=np.uint16)
    cuts = np.concatenate([[0], np.cumsum(lens)])
    d = root / "tokens"
    with ShardWriter(d, {"tokens": ragged("uint16")}, shard_bytes=32 << 20) as w:
        for s in range(0, len(lens), 4096):
            end = min(len(lens), s + 4096)
            w.write({"tokens": [flat[cuts[i] : cuts[i + 1]] for i in range(s, end)]})
    return d, total / len(lens)


def endless(loader: Loader) -> Iterator[Any]:
    while True:
        yield from loader


def rounds(
    its: dict[str, Iterator[Any]], batches: int, repeats: int, step_s: float = 0.0
) -> dict[str, float]:
    """Median seconds per batch of each contender, alternating rounds; round 0 warms up."""
    times: dict[str, list[float]] = {k: [] for k in its}
    for r in range(repeats + 1):
        for label, it in its.items():
            for _ in range(8):
                next(it)
            t0 = time.perf_counter()
            for _ in range(batches):
                next(it)
                if step_s:
                    time.sleep(step_s)
            if r:
                times[label].append((time.perf_counter() - t0) / batches)
    return {k: statistics.median(v) for k, v in times.items()}


def one_thread(docs: Loader, base: float) -> None:
    """The fields' own cost in one thread beside the token gather, and their roofline."""
    # the work itself, in one thread: the same 64 windows of the epoch's order
    w = docs.windows
    order = docs.sampler.order()
    starts = w.starts(0, 0, True)
    batch_starts = [starts[order[i : i + B]] for i in range(0, 50 * B, B)]
    out = np.empty((B, T + 1), np.int64)
    k = iter(range(10**9))
    t_read, _ = median_time(
        lambda: w.read(batch_starts[next(k) % 50], out=out), 7, warmup=1, inner=50
    )
    t_doc, _ = median_time(
        lambda: w.document_fields(batch_starts[next(k) % 50]), 7, warmup=1, inner=50
    )
    print(
        f"one thread: token gather {t_read * 1e6:.1f} us/batch, document fields "
        f"{t_doc * 1e6:.1f} us/batch ({t_doc / t_read:.2f}x the gather)"
    )
    slot = {"position_ids": np.empty((B, T), np.int64), "loss_mask": np.empty((B, T), bool)}
    t_slot, _ = median_time(
        lambda: w.document_fields(batch_starts[next(k) % 50], out=slot), 7, warmup=1, inner=50
    )
    if windows_mod._gather is not None:
        native = windows_mod._gather
        windows_mod._gather = None  # the numpy path, for the record
        try:
            t_np, _ = median_time(
                lambda: w.document_fields(batch_starts[next(k) % 50], out=slot),
                7,
                warmup=1,
                inner=50,
            )
        finally:
            windows_mod._gather = native
        path = f"C kernel; the numpy path {t_np * 1e6:.1f} us/batch"
    else:
        path = "numpy path: the C extension did not build"
    print(f"  document fields into reused buffers {t_slot * 1e6:.1f} us/batch ({path})")
    # the memory roofline: the fields' bytes (position_ids as many as the widened
    # tokens, loss_mask one byte an input) written by memset, and copied by np.copyto
    pos, mask = slot["position_ids"], slot["loss_mask"]
    src_pos, src_mask = np.ones_like(pos), np.ones_like(mask)
    nbytes = pos.nbytes + mask.nbytes
    t_set, _ = median_time(
        lambda: (ctypes.memset(pos.ctypes.data, 0, pos.nbytes), mask.fill(True)),
        7,
        warmup=1,
        inner=50,
    )
    t_copy, _ = median_time(
        lambda: (np.copyto(pos, src_pos), np.copyto(mask, src_mask)), 7, warmup=1, inner=50
    )
    print(
        f"  roofline for the fields' {nbytes / 1e3:.0f} kB: memset {t_set * 1e6:.1f} us "
        f"({nbytes / t_set / 1e9:.0f} GB/s), np.copyto {t_copy * 1e6:.1f} us; as a share "
        f"of a plain batch ({base * 1e6:.1f} us): {100 * t_set / base:+.1f}% .. "
        f"{100 * t_copy / base:+.1f}%"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--step-ms", type=float, default=5.0, help="simulated step (0: skip)")
    args = ap.parse_args()
    n_tokens = 8 << 20 if args.quick else 64 << 20
    batches, repeats = (40, 5) if args.quick else (150, 9)
    with tempfile.TemporaryDirectory() as tmp:
        d, mean_len = make_corpus(Path(tmp), n_tokens)
        print(
            f"corpus: {n_tokens / 1e6:.0f}M uint16 tokens, mean document {mean_len:.0f} tokens; "
            f"B={B}, T={T}, {args.workers} worker threads"
        )

        def make(documents: bool | str) -> Loader:
            return Loader(
                d,
                batch_size=B,
                seq_len=T,
                documents=documents,
                seed=0,
                num_workers=args.workers,
                meter=False,
            )

        plain, docs, pack = make(False), make(True), make("pack")
        first = next(iter(docs))
        assert first["tokens"].equal(next(iter(plain))["tokens"])  # the same windows
        print(
            f"  cu_seqlens length B*S+1 = {first['cu_seqlens'].numel()} "
            f"(S = {docs.windows.max_segments} segments at most per window); "
            f"packing: {len(pack.windows)} windows, padding fraction "
            f"{pack.windows.padding_fraction:.4f}"
        )

        its = {
            "plain windows": endless(plain),
            "documents=True": endless(docs),
            "documents='pack'": endless(pack),
        }
        res = rounds(its, batches, repeats)
        base = res["plain windows"]
        print("loader throughput (median of rounds):")
        for label, t in res.items():
            extra = "" if label == "plain windows" else f"   overhead {100 * (t / base - 1):+6.1f}%"
            print(f"  {label:<18} {t * 1e6:8.1f} us/batch {B * T / t / 1e6:9.1f} M tokens/s{extra}")
        over = 100 * (res["documents=True"] / base - 1)
        print(f"documents=True overhead vs plain windows: {over:+.1f}% (target <= 3%)")

        one_thread(docs, base)

        if args.step_ms > 0:
            step = args.step_ms / 1e3
            its = {"plain windows": endless(plain), "documents=True": endless(docs)}
            res = rounds(its, max(20, batches // 5), repeats, step_s=step)
            base = res["plain windows"]
            print(
                f"beside a {args.step_ms:g} ms step: plain {res['plain windows'] * 1e3:.3f} ms/step, "
                f"documents=True {res['documents=True'] * 1e3:.3f} ms/step "
                f"({100 * (res['documents=True'] / base - 1):+.2f}%)"
            )
        for ld in (plain, docs, pack):
            ld.close()


if __name__ == "__main__":
    main()
